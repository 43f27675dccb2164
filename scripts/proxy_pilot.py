"""Choose the proxy: `python scripts/proxy_pilot.py [--c-flops 0.1] [--out DIR] …`.

Recipes drawn without selection at one regime, plus the uniform one, each fine-tuned for
t ∈ {1, 2, 4, 8} epochs (validation, 2 seeds; t = 0: adaptive BN only, no gradient step) and for
20 epochs (test); prints Kendall τ-b of each t against the long fine-tune, the seed SD and the
seconds, the cheapest t with one-seed τ ≥ 0.6 (evoprune/experiments/pilot.py), and what successive halving
over the t would select (evoprune/searching/fidelity.py). Rerunning with other --epochs resumes the folder:
only the new t run. Writes runs.jsonl as it goes (a rerun resumes), then
pilot.json and pilot.md. Defaults: resnet20 on Fashion-MNIST, 10,000 training images, 5,000
for validation, residual units, STD-0.1/0.05/0.01 and mCB-1 at c_flops 0.1, 4 recipes each.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from evoprune.errors import EvopruneError
from evoprune.experiments.pilot import PilotConfig, format_table, run_pilot


def main(argv: list[str] | None = None) -> int:
    """Parse, run the pilot, print its table; one-line errors exit 2."""
    d = PilotConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=d.dataset)
    p.add_argument("--data-root", default=d.data_root)
    p.add_argument("--train-size", type=int, default=d.train_size,
                   help=f"training subset (default {d.train_size}; 0: all)")
    p.add_argument("--val-size", type=int, default=d.val_size)
    p.add_argument("--base-epochs", type=int, default=d.base_epochs)
    p.add_argument("--c-flops", type=float, default=d.c_flops)
    p.add_argument("--spaces", nargs="+", default=list(d.spaces), help="std:X and mcb:X")
    p.add_argument("--per-space", type=int, default=d.per_space)
    p.add_argument("--epochs", type=int, nargs="+", default=list(d.epochs),
                   help="the proxies' epochs; 0: adaptive BN only (rung 0 of successive halving)")
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--long-epochs", type=int, default=d.long_epochs)
    p.add_argument("--precision", default=d.precision, choices=("auto", "fp32", "bf16"))
    p.add_argument("--device", default=d.device)
    p.add_argument("--out", default=d.out)
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the table of the runs so far")
    args = vars(p.parse_args(argv))
    report_only = args.pop("report_only")
    args["train_size"] = args["train_size"] or None
    names = {f.name for f in fields(PilotConfig)}
    try:
        config = PilotConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in args.items() if k in names})
        table = run_pilot(config, progress=lambda line: print(line, flush=True),
                          report_only=report_only)
    except EvopruneError as exc:
        print(f"proxy_pilot: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(config, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
