"""Run `evoprune ARGV` with one planted fault: `python fault.py POINT K ARGV...`.

POINT is where the process meets its fault:
  step   SIGKILL before the K-th optimizer step (mid-epoch of a fine-tune)
  write  SIGKILL before the K-th SQL INSERT/UPDATE/DELETE (mid-storage-write, inside its
         transaction: the statements before it in that transaction are never committed)
  time   SIGKILL K milliseconds after start (anywhere: imports, set-up, training, storage)
  nan    NaN into the weights after the K-th optimizer step (the NaN guard must fail the trial)
  full   the disk fills at the K-th SQL INSERT/UPDATE/DELETE: it and every later write fail
         with SQLite's own SQLITE_FULL error ("database or disk is full"), raised where the
         driver executes them, until a `PRAGMA wal_checkpoint(TRUNCATE)` gives the write-ahead
         log's space back (the space a real full disk can return to a SQLite storage)
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def plant(point: str, k: int) -> None:
    """Patch this process so it meets `point` at its K-th occasion."""
    if point == "time":
        timer = threading.Timer(k / 1000, _die)
        timer.daemon = True  # a run that ends first must not wait for it
        timer.start()
        return
    if point == "write":
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        writes = [0]

        @event.listens_for(Engine, "before_cursor_execute")
        def _before(conn, cursor, statement, params, context, executemany):
            if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
                writes[0] += 1
                if writes[0] == k:
                    _die()
        return
    if point == "full":
        import sqlite3

        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        writes, full = [0], [False]

        @event.listens_for(Engine, "before_cursor_execute")
        def _count(conn, cursor, statement, params, context, executemany):
            if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
                writes[0] += 1
                full[0] = full[0] or writes[0] == k
            elif "wal_checkpoint(TRUNCATE)" in statement:
                full[0] = False

        def _execute(cursor, statement, params, context):
            if full[0] and statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
                error = sqlite3.OperationalError("database or disk is full")
                error.sqlite_errorcode, error.sqlite_errorname = sqlite3.SQLITE_FULL, "SQLITE_FULL"
                raise error

        event.listen(Engine, "do_execute", _execute)  # inside SQLAlchemy's error handling
        event.listen(Engine, "do_executemany", _execute)
        return
    if point in ("step", "nan"):
        import torch

        real = torch.optim.SGD.step
        steps = [0]

        def step(self, *args, **kwargs):
            steps[0] += 1
            if point == "step" and steps[0] == k:
                _die()
            out = real(self, *args, **kwargs)
            if point == "nan" and steps[0] == k:
                with torch.no_grad():
                    self.param_groups[0]["params"][0].fill_(float("nan"))
            return out

        torch.optim.SGD.step = step
        return
    raise SystemExit(f"unknown fault point {point!r}")


if __name__ == "__main__":
    plant(sys.argv[1], int(sys.argv[2]))
    from evoprune.cli.commands import main

    sys.exit(main(sys.argv[3:]))
