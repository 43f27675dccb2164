"""The `evoprune` command: parse, validate, call one library function, print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from evoprune.errors import EvopruneError, NonFiniteLossError


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message` on one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _model_args(p: argparse.ArgumentParser) -> None:
    from evoprune.data import DEFAULT_DATASET

    p.add_argument("--model", default="resnet20",
                   help="zoo model (resnet20/32/56/110, vgg16, mobilenetv2, resnet18, resnet50, "
                        "tv_mobilenetv2, digitsnet) or package.module:callable (default resnet20)")
    p.add_argument("--dataset", default=DEFAULT_DATASET,
                   help="sets input shape and classes; no data is read (default digits)")
    p.add_argument("--data-root", help="dataset folder (imagefolder reads its class names)")
    p.add_argument("--residual", action="store_true",
                   help="also prune channel groups coupled by skip connections (stage widths)")


def _space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--c-flops", type=float, help="FLOPs band centre: FLOPs(sub)/FLOPs(orig)")
    p.add_argument("--delta", type=float, default=0.002, help="band half-width (default 0.002)")
    p.add_argument("--c-params", type=float, help="params band centre: params(sub)/params(orig)")
    p.add_argument("--c-mcb", type=float, help="mean computation budget (Eq. 2), e.g. 1.0")
    p.add_argument("--mcb-tol", type=float, default=0.1, help="mCB tolerance (default 0.1)")
    p.add_argument("--c-std", type=float, help="standard deviation of the recipe (STD-s space)")
    p.add_argument("--r-max", type=float, default=0.95, help="largest ratio of a unit (default 0.95)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep a multiple of N channels per unit (e.g. 8 for tensor cores)")


def _prune_args(p: argparse.ArgumentParser) -> None:
    from evoprune.recipes import DEFAULT_STORAGE

    _model_args(p)
    p.add_argument("--recipe", required=True,
                   help="uniform:R, a JSON file (list of ratios or {unit: ratio}), or study:NAME:TRIAL")
    p.add_argument("--checkpoint", help="weights of the trained base model (a state_dict file)")
    p.add_argument("--importance", default="l2", choices=("l2", "l1", "fpgm", "random"),
                   help="filter ranking (default l2, the paper's)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep a multiple of N channels per unit (e.g. 8 for tensor cores)")
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
    train = sub.add_parser("train", help="train a model from scratch (the base network)")
    train.add_argument("--model", default="resnet20", help="zoo model or package.module:callable")
    train.add_argument("--dataset", default="digits", help="digits (default), cifar10, cifar100, "
                                                           "imagefolder, synthetic[:CxHxW[:classes]]")
    train.add_argument("--data-root", help="dataset folder (CIFAR in torchvision's layout)")
    train.add_argument("--download", action="store_true", help="download CIFAR if absent")
    train.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    train.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    train.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    train.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    train.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up epochs")
    train.add_argument("--label-smoothing", type=float, default=0.0, help="default 0")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    train.add_argument("--out", help="checkpoint file, written every epoch; rerun to resume")
    train.add_argument("--compile", action="store_true",
                       help="torch.compile the training forward (pays off on long runs)")
    train.add_argument("--json", action="store_true", help="print one final JSON object")
    sample = sub.add_parser("sample", help="draw i.i.d. recipes from a pruning space")
    _model_args(sample)
    _space_args(sample)
    sample.add_argument("--n", type=int, default=10, help="recipes to draw (default 10)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--json", action="store_true",
                        help="one JSON object per recipe on stdout (summary on stderr)")
    bench = sub.add_parser("bench", help="benchmarks (each prints its machine, sizes and ratios)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    cost = bench_sub.add_parser("cost", help="analytic cost model against FlopCounterMode, and "
                                             "pruning time")
    cost.add_argument("--models", nargs="+", default=["resnet56", "resnet50"],
                      help="models to time (default resnet56 resnet50)")
    cost.add_argument("--repeats", type=int, default=5, help="timings per figure (median)")
    cost.add_argument("--json", action="store_true", help="print one JSON object per model")
    space = bench_sub.add_parser("space", help="decoded recipes per second against the "
                                               "rejection sampler")
    space.add_argument("--models", nargs="+", default=["resnet56", "resnet50"],
                       help="models to time (default resnet56 resnet50)")
    space.add_argument("--c-flops", type=float, default=0.25, help="band centre (default 0.25)")
    space.add_argument("--n", type=int, default=2000, help="genotypes decoded in one batch")
    space.add_argument("--seconds", type=float, default=5.0,
                       help="time given to the rejection sampler per case (default 5)")
    space.add_argument("--json", action="store_true", help="print one JSON object per case")
    train = bench_sub.add_parser("train", help="training images/s against a DataLoader loop")
    train.add_argument("--cases", nargs="+", default=["resnet20-digits", "resnet56-cifar"],
                       help="resnet20-digits and/or resnet56-cifar (synthetic CIFAR-shaped)")
    train.add_argument("--epochs", type=int, default=1, help="epochs per loop (default 1)")
    train.add_argument("--batch-size", type=int, default=128, help="default 128")
    train.add_argument("--n-synthetic", type=int, default=2048,
                       help="training images of the synthetic case (default 2048; 50000 on a GPU)")
    train.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    train.add_argument("--sweep", action="store_true",
                       help="instead: time the engine's options (threads, batch size, "
                            "channels_last, torch.compile) on the first case")
    train.add_argument("--json", action="store_true", help="print one JSON object per case")
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


def _print_sample(r: dict[str, Any], as_json: bool) -> None:
    s = r["summary"]
    summary = (f"{s['inside']}/{s['n']} inside every band ({100 * s['hit_rate']:.1f}%), "
               f"{s['recipes_per_s']:,.0f} recipes/s; uniform baseline: FLOPs "
               f"{r['uniform']['flops_ratio']:.4f}, params {r['uniform']['params_ratio']:.4f}, "
               f"mCB {r['uniform']['mcb']:.3f}")
    if as_json:
        for row in r["recipes"]:
            print(json.dumps(row))
        print(json.dumps({"summary": s, "space": r["space"], "uniform": r["uniform"]}),
              file=sys.stderr)
        return
    print(f"{r['label']} space of {r['model']} ({len(r['units'])} units) {r['bands']}")
    print(f"{'#':>4} {'FLOPs':>7} {'params':>7} {'mCB':>6} {'std':>6}  recipe")
    for i, row in enumerate(r["recipes"]):
        recipe = " ".join(f"{v:.2f}" for v in row["recipe"])
        print(f"{i:>4} {row['flops_ratio']:>7.4f} {row['params_ratio']:>7.4f} {row['mcb']:>6.3f} "
              f"{row['std']:>6.4f}  {recipe}")
    print(summary)


def _print_epoch(epochs: int) -> Any:
    """A progress line per epoch on stderr: epoch, loss, accuracies, images/s."""
    def show(r: dict[str, float]) -> None:
        print(f"epoch {int(r['epoch']):>3}/{epochs}  loss {r['loss']:.4f}  train "
              f"{100 * r['train_acc']:5.1f}%  test {100 * r['test_acc']:5.1f}%  "
              f"{r['images_per_s']:,.0f} img/s", file=sys.stderr, flush=True)
    return show


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
        elif args.command == "train":
            from evoprune.jobs import TrainJob, run_train

            job = TrainJob(**{k: getattr(args, k) for k in TrainJob.__dataclass_fields__})
            result = run_train(job, progress=_print_epoch(job.epochs))
            if args.json:
                print(json.dumps(result))
            else:
                print(f"test accuracy {100 * result['test_acc']:.2f}% after {result['epochs_run']} "
                      f"epochs, {result['seconds']:.1f} s of training, "
                      f"{result['images_per_s']:,.0f} images/s on {result['device']}"
                      + (f"; saved {result['out']}" if result["out"] else ""))
        elif args.command == "sample":
            from evoprune.jobs import SampleJob, run_sample

            job = SampleJob(**{k: getattr(args, k) for k in SampleJob.__dataclass_fields__})
            _print_sample(run_sample(job), args.json)
        elif args.command == "bench":
            from evoprune import bench

            if args.bench == "train":
                bad = [c for c in args.cases if c not in bench.TRAIN_CASES]
                if bad or args.epochs < 1 or args.batch_size < 1 or args.n_synthetic < 1:
                    raise EvopruneError(f"bench train takes cases from "
                                        f"{', '.join(bench.TRAIN_CASES)} and positive sizes")
                if args.sweep:
                    rows = bench.bench_train_sweep(args.cases[0], epochs=args.epochs,
                                                   n_synthetic=args.n_synthetic,
                                                   device=args.device)
                    text = bench.format_sweep_rows(rows)
                else:
                    rows = bench.bench_train(args.cases, epochs=args.epochs,
                                             batch_size=args.batch_size,
                                             n_synthetic=args.n_synthetic, device=args.device)
                    text = bench.format_train_rows(rows)
                print("\n".join(json.dumps(r) for r in rows) if args.json else text)
                return 0
            unknown = [m for m in args.models if m not in bench.COST_CASES]
            if unknown:
                raise EvopruneError(f"bench takes models from {', '.join(bench.COST_CASES)}")
            if args.bench == "cost":
                if args.repeats < 1:
                    raise EvopruneError("--repeats must be at least 1")
                rows = bench.bench_cost(args.models, repeats=args.repeats)
                text = bench.format_cost_rows(rows)
            else:
                if args.n < 1 or args.seconds <= 0:
                    raise EvopruneError("--n must be at least 1 and --seconds positive")
                rows = bench.bench_space(args.models, c_flops=args.c_flops, n=args.n,
                                         seconds=args.seconds)
                text = bench.format_space_rows(rows)
            print("\n".join(json.dumps(r) for r in rows) if args.json else text)
    except EvopruneError as exc:
        print(f"evoprune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"evoprune {args.command}: training diverged: {exc}; lower --lr", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
