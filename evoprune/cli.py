"""The `evoprune` command: parse, validate, call one library function, print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from evoprune.errors import EvopruneError


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message` on one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _prune_args(p: argparse.ArgumentParser) -> None:
    from evoprune.data import DEFAULT_DATASET
    from evoprune.recipes import DEFAULT_STORAGE

    p.add_argument("--model", default="resnet20",
                   help="zoo model (resnet20/32/56/110, vgg16, mobilenetv2, resnet18, resnet50, "
                        "tv_mobilenetv2, digitsnet) or package.module:callable (default resnet20)")
    p.add_argument("--recipe", required=True,
                   help="uniform:R, a JSON file (list of ratios or {unit: ratio}), or study:NAME:TRIAL")
    p.add_argument("--dataset", default=DEFAULT_DATASET,
                   help="sets input shape and classes; no data is read (default digits)")
    p.add_argument("--data-root", help="dataset folder (imagefolder reads its class names)")
    p.add_argument("--checkpoint", help="weights of the trained base model (a state_dict file)")
    p.add_argument("--importance", default="l2", choices=("l2", "l1", "fpgm", "random"),
                   help="filter ranking (default l2, the paper's)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep a multiple of N channels per unit (e.g. 8 for tensor cores)")
    p.add_argument("--residual", action="store_true",
                   help="also prune channel groups coupled by skip connections (stage widths)")
    p.add_argument("--seed", type=int, default=0, help="seed of --importance random")
    p.add_argument("--out", help="save the pruned model here (load with evoprune.load_pruned)")
    p.add_argument("--onnx", help="also export the pruned model to ONNX (needs onnx)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage for study:NAME:TRIAL")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of every subcommand."""
    parser = _Parser(prog="evoprune", description="Search network pruning spaces of trained CNNs.")
    from evoprune import __version__

    parser.add_argument("--version", action="version", version=f"evoprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _prune_args(sub.add_parser("prune", help="prune a model to a recipe and report its exact cost"))
    bench = sub.add_parser("bench", help="benchmarks (each prints its machine, sizes and ratios)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    cost = bench_sub.add_parser("cost", help="analytic cost model against FlopCounterMode, and "
                                             "pruning time")
    cost.add_argument("--models", nargs="+", default=["resnet56", "resnet50"],
                      help="models to time (default resnet56 resnet50)")
    cost.add_argument("--repeats", type=int, default=5, help="timings per figure (median)")
    cost.add_argument("--json", action="store_true", help="print one JSON object per model")
    return parser


def _print_prune(r: dict[str, Any]) -> None:
    shape = "x".join(str(s) for s in r["in_shape"])
    print(f"{r['model']} on {r['dataset']} ({shape}): {len(r['units'])} units, "
          f"importance {r['importance']}" + (f", round to {r['round_to']}" if r["round_to"] > 1 else ""))
    width = max(len("unit"), *(len(n) for n in r["units"]))
    print(f"{'unit':<{width}}  {'kind':<8}  {'channels':>8}  {'kept':>6}  {'ratio':>6}")
    for name, kind, c, k, ratio in zip(r["units"], r["kinds"], r["original_channels"],
                                       r["channels"], r["recipe"]):
        print(f"{name:<{width}}  {kind:<8}  {c:>8}  {k:>6}  {ratio:>6.3f}")
    print(f"\n{'':<7}{'original':>16}{'pruned':>16}{'ratio':>9}")
    for label, base, now, ratio in (
        ("FLOPs", r["base_flops"], r["flops"], r["flops_ratio"]),
        ("MACs", r["base_macs"], r["macs"], r["flops_ratio"]),
        ("params", r["base_params"], r["params"], r["params_ratio"]),
    ):
        print(f"{label:<7}{base:>16,}{now:>16,}{ratio:>9.4f}")
    print(f"mCB (Eq. 2) {r['mcb']:.4f}")
    if r["out"]:
        print(f"saved {r['out']} (sha256 {r['sha256'][:16]}…)")
    if r.get("onnx"):
        print(f"exported {r['onnx']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `evoprune` command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prune":
            from evoprune.jobs import PruneJob, run_prune

            job = PruneJob(**{k: getattr(args, k) for k in PruneJob.__dataclass_fields__})
            result = run_prune(job)
            if args.json:
                print(json.dumps(result))
            else:
                _print_prune(result)
        elif args.command == "bench":
            from evoprune.bench import COST_CASES, bench_cost, format_cost_rows

            unknown = [m for m in args.models if m not in COST_CASES]
            if unknown or args.repeats < 1:
                raise EvopruneError(f"bench cost takes models from {', '.join(COST_CASES)} "
                                    "and --repeats >= 1")
            rows = bench_cost(args.models, repeats=args.repeats)
            print("\n".join(json.dumps(r) for r in rows) if args.json else format_cost_rows(rows))
    except EvopruneError as exc:
        print(f"evoprune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
