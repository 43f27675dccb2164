"""The command line (`evoprune …`, `python -m evoprune`): parse, validate, call one library
function (`main`). Flags map to config fields in one table; nothing below reads argv.

May import: every package.
"""

from __future__ import annotations

from evoprune.cli.commands import main

__all__ = ["main"]
