"""The `evoprune` command: parse, validate, call one library function, print."""

from __future__ import annotations

import argparse
import json
import shlex
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


def _search_args(p: argparse.ArgumentParser) -> None:
    from evoprune.objective import OBJECTIVES
    from evoprune.recipes import DEFAULT_STORAGE
    from evoprune.search import SAMPLERS
    from evoprune.train import RETRAIN_MODES

    _model_args(p)
    _space_args(p)
    p.add_argument("--checkpoint", help="trained base weights (default: train once and cache "
                                        "under studies/checkpoints/)")
    p.add_argument("--base-epochs", type=int, default=30,
                   help="epochs of the cached base training without --checkpoint (default 30)")
    p.add_argument("--sampler", default="nsga2", choices=SAMPLERS,
                   help="nsga2 (default), random (i.i.d., for the EDF analysis) or tpe")
    p.add_argument("--population", type=int, default=16, help="NSGA-II population (default 16)")
    p.add_argument("--n-trials", type=int, default=32,
                   help="COMPLETE trials of the study in total, over all runs and workers "
                        "(default 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--proxy-epochs", type=int, default=2, help="proxy fine-tune epochs (default 2)")
    p.add_argument("--proxy-lr", type=float, default=0.01, help="proxy lr (default 0.01, cosine)")
    p.add_argument("--proxy-batch-size", type=int,
                   help="default 32 on digits (45 steps an epoch), 128 elsewhere")
    p.add_argument("--screen", choices=("adaptive-bn",),
                   help="cheap pre-screen: recalibrate BN, prune weak trials before the fine-tune")
    p.add_argument("--screen-keep", type=float, default=0.5,
                   help="fraction the screen lets through (default 0.5)")
    p.add_argument("--objectives", default="acc_drop,params",
                   help=f"comma list from {','.join(OBJECTIVES)}, all minimised "
                        "(default acc_drop,params)")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="sqlite:///FILE.db (default studies/evoprune.db), journal:FILE.log "
                        "(several workers) or postgresql://… (several machines)")
    p.add_argument("--study-name", help="default: MODEL-DATASET-SPACE-fC_FLOPS")
    p.add_argument("--n-workers", type=int, default=1,
                   help="worker processes on this machine (needs a journal or RDB storage)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    p.add_argument("--top-k", type=int, default=0,
                   help="then fully retrain the k best trials and the uniform baseline")
    p.add_argument("--retrain-mode", default="finetune", choices=RETRAIN_MODES,
                   help="finetune (default), rewind, scratch or scratch-b")
    p.add_argument("--retrain-epochs", type=int, default=10, help="default 10")
    p.add_argument("--json", action="store_true", help="print one final JSON object")


def _retrain_args(p: argparse.ArgumentParser) -> None:
    from evoprune.recipes import DEFAULT_STORAGE
    from evoprune.train import RETRAIN_MODES

    p.add_argument("--storage", default=DEFAULT_STORAGE, help="the study's storage URL")
    p.add_argument("--study-name", required=True, help="the study to retrain from")
    p.add_argument("--top-k", type=int, default=3, help="best trials to retrain (default 3)")
    p.add_argument("--mode", default="finetune", choices=RETRAIN_MODES,
                   help="finetune (default), rewind, scratch or scratch-b")
    p.add_argument("--epochs", type=int, default=10, help="default 10")
    p.add_argument("--lr", type=float, help="default: 0.01 for finetune, 0.1 otherwise")
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="do not retrain the uniform baseline")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--data-root", help="dataset folder, if not the study's")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _analyze_args(p: argparse.ArgumentParser) -> None:
    from evoprune.recipes import DEFAULT_STORAGE

    p.add_argument("--storage", default=DEFAULT_STORAGE, help="the studies' storage URL")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--study-name", nargs="+", metavar="NAME", help="studies to analyse")
    which.add_argument("--all", action="store_true", help="every study of the storage")
    p.add_argument("--out", default="studies/analysis",
                   help="folder for report.md, summary.json and the figures "
                        "(default studies/analysis)")
    p.add_argument("--best", type=int, default=40, help="best subnetworks per regime (default 40)")
    p.add_argument("--winners", type=int, help="winners defining the optimal mCB: the best N …")
    p.add_argument("--winner-fraction", type=float, default=0.1,
                   help="… or this fraction of each regime (default 0.1)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap draws (default 1000)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--predict", type=float, nargs="+", default=[], metavar="C_FLOPS",
                   help="predict the best drop of these regimes from the fitted laws")
    p.add_argument("--attach", action="store_true",
                   help="also store the figures in the studies as Optuna artifacts")
    p.add_argument("--artifact-dir", default="studies/artifacts",
                   help="where --attach keeps artifact files (default studies/artifacts)")
    p.add_argument("--json", action="store_true", help="print summary.json's object")


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
    _search_args(sub.add_parser("search", help="search a pruning space with Optuna (NSGA-II); "
                                               "resumable, scales out over workers"))
    _retrain_args(sub.add_parser("retrain", help="fully retrain the top-k trials of a study and "
                                                 "its uniform baseline"))
    _analyze_args(sub.add_parser("analyze", help="EDFs, optimal mCB and the drop-limit law "
                                                 "from study storages: figures and a report"))
    rep = sub.add_parser("reproduce", help="run a study set (studies/*.toml) end to end and "
                                           "test the paper's observations")
    rep.add_argument("--config", default="studies/digits.toml",
                     help="the study set (default studies/digits.toml)")
    rep.add_argument("--quick", action="store_true",
                     help="the set's [quick] table: a few minutes, for tests and a first look")
    rep.add_argument("--storage", help="the studies' storage URL (default: the set's)")
    rep.add_argument("--out", help="folder for report.md, summary.json and figures "
                                   "(default: the set's)")
    rep.add_argument("--device", help="auto, cpu or cuda[:i] (default: the set's)")
    rep.add_argument("--json", action="store_true", help="print summary.json's object")
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
    search = bench_sub.add_parser("search", help="the search's own overhead per trial against "
                                                 "training time")
    search.add_argument("--cases", nargs="+", default=["resnet20-digits", "resnet56-synthetic"],
                        help="resnet20-digits and/or resnet56-synthetic (CIFAR-shaped)")
    search.add_argument("--n-trials", type=int, default=6, help="timed trials per case (default 6)")
    search.add_argument("--n-synthetic", type=int, default=2048,
                        help="training images of the synthetic case (default 2048)")
    search.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    search.add_argument("--json", action="store_true", help="print one JSON object per case")
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


def _print_search_event() -> Any:
    """Progress lines of a search on stderr: base training, trials, best so far, retraining."""
    best: dict[str, Any] = {}

    def show(e: dict[str, Any]) -> None:
        event = e.get("event")
        worker = e.get("worker") or {}
        tag = f" [w{worker['index']}]" if isinstance(worker, dict) and "index" in worker else ""
        if event == "base":
            line = (f"training the base {e['model']} on {e['dataset']} ({e['epochs']} epochs, "
                    "cached under studies/checkpoints/ for later searches)")
        elif event in ("base_epoch", "retrain_epoch"):
            line = (f"  epoch {int(e['epoch'])}  loss {e['loss']:.4f}  test "
                    f"{100 * e['test_acc']:.2f}%")
        elif event == "created":
            u = e["uniform"]
            line = (f"created study {e['study']} ({e['units']} units); trial 0 is the uniform "
                    f"baseline: FLOPs {u['flops_ratio']:.4f}, params {u['params_ratio']:.4f}, "
                    f"mCB {u['mcb']:.3f}")
        elif event == "reaped":
            line = (f"trial(s) {', '.join(map(str, e['trials']))} were left RUNNING by a dead "
                    "process: marked FAIL and queued again (retry_of)")
        elif event == "start":
            line = (f"study {e['study']}: {e['complete']}/{e['n_trials']} COMPLETE, base "
                    f"accuracy {100 * e['base_acc']:.2f}%, {e['workers']} worker(s)")
        elif event == "retrain":
            line = (f"retraining trial {e['number']}{' (uniform)' if e['is_uniform'] else ''}: "
                    f"{e['mode']}, {e['epochs']} epochs, lr {e['lr']:g}")
        elif "failed" in e:
            line = f"trial {e['number']:>4}{tag} FAILED: {e['failed']}"
        elif "acc_drop" in e:
            if not best or e["acc_drop"] < best["acc_drop"]:
                best.update(acc_drop=e["acc_drop"], number=e["number"])
            line = (f"trial {e['number']:>4}{tag}  drop {e['acc_drop']:6.2f} pp  FLOPs "
                    f"{e['flops_ratio']:.4f}  params {e['params_ratio']:.4f}  mCB {e['mcb']:.3f}  "
                    f"std {e['recipe_std']:.3f}{'  uniform' if e['is_uniform'] else ''}  "
                    f"{e['seconds']:.1f} s | best {best['acc_drop']:.2f} pp (#{best['number']})")
        else:
            return
        print(line, file=sys.stderr, flush=True)
    return show


def _format_trials(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'trial':>5} {'drop pp':>8} {'FLOPs':>7} {'params':>7} {'mCB':>6} {'std':>6} "
             f"{'retrained drop':>15}"]
    for r in rows:
        re = r.get("retrain")
        retrained = f"{re['acc_drop']:.2f} ({re['mode']} {re['epochs']})" if re else "-"
        lines.append(f"{r['number']:>5} {r['acc_drop']:>8.2f} {r['flops_ratio']:>7.4f} "
                     f"{r['params_ratio']:>7.4f} {r['mcb']:>6.3f} {r['recipe_std']:>6.3f} "
                     f"{retrained:>15}{'  uniform' if r['is_uniform'] else ''}")
    return lines


def _format_search(r: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {k}" for k, n in sorted(r["states"].items()))
    lines = [f"study {r['study']} in {r['storage']}: {states}; base accuracy "
             f"{100 * r['base_acc']:.2f}%; {r['seconds']:.1f} s", "best trials (proxy):"]
    lines += _format_trials(r["best"])
    if r["uniform"] is not None and r["uniform"] not in r["best"]:
        lines += _format_trials([r["uniform"]])[1:]
    lines.append(f"open the dashboard:  {r['dashboard']}")
    if r["best"]:
        lines.append(f"export the best:     evoprune prune --storage {r['storage']} --recipe "
                     f"study:{r['study']}:{r['best'][0]['number']} --out best.pt")
    return "\n".join(lines)


def _format_retrain(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'trial':>5} {'mode':>9} {'epochs':>6} {'acc':>7} {'drop pp':>8}  model"]
    for r in rows:
        lines.append(f"{r['number']:>5} {r['mode']:>9} {r['epochs']:>6} {100 * r['acc']:>6.2f}% "
                     f"{r['acc_drop']:>8.2f}  {r.get('model_path', '')}"
                     + ("  (uniform baseline)" if r["is_uniform"] else "")
                     + ("  (already done)" if r["skipped"] else ""))
    return "\n".join(lines)


def _format_analysis(d: dict[str, Any], config: Any) -> str:
    lines = [f"{len(d['studies'])} studies, {len(d['regimes'])} regimes analysed in "
             f"{d['seconds']:.1f} s"]
    for r in d["regimes"]:
        o = r["optimal_mcb"]
        c = o["center"]
        lines.append(f"  c_{r['regime']} = {r['target']:g}: optimal mCB {c['estimate']:.3f} "
                     f"[{c['lo']:.3f}, {c['hi']:.3f}], best drop {o['best_drop']['estimate']:.2f} pp"
                     + "".join(f"; {s['label']} beats uniform {100 * s['beats_uniform']:.0f}%"
                               for s in r["spaces"] if s["beats_uniform"] is not None))
    for key, title in (("mcb_curve", "optimal-mCB curve"), ("law", "drop-limit law")):
        fit = d[key]
        lines.append(f"{title}: " + (f"{fit['form']}, R² {fit['r2']:.3f}" if "form" in fit
                                     else f"not fitted ({fit['error']})"))
    for p in d["predictions"]:
        lines.append(f"predicted best drop at c_flops {p['c_flops']:g}: {p['drop']['estimate']:.2f}"
                     f" pp [{p['drop']['lo']:.2f}, {p['drop']['hi']:.2f}]")
    lines.append(f"wrote {d['out']}/report.md, summary.json and {len(d['figures'])} figures")
    if "attached" in d:
        lines.append(f"attached {d['attached']} artifacts; view them with: optuna-dashboard "
                     f"{d['storage']} --artifact-dir {config.artifact_dir}")
    return "\n".join(lines)


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
        elif args.command == "search":
            from evoprune.search import config_from, run_search

            fields = ("c_flops", "c_mcb", "mcb_tol", "c_std", "c_params", "delta", "r_max",
                      "round_to", "residual", "model", "dataset", "data_root", "checkpoint",
                      "sampler", "population", "n_trials", "seed", "storage", "study_name",
                      "n_workers", "device", "top_k", "retrain_mode", "retrain_epochs",
                      "base_epochs", "proxy_epochs", "proxy_lr", "proxy_batch_size", "screen",
                      "screen_keep")
            objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
            config = config_from(**{k: getattr(args, k) for k in fields}, objectives=objectives)
            try:
                result = run_search(config, progress=_print_search_event())
            except KeyboardInterrupt:
                print("\ninterrupted: the study keeps every COMPLETE trial; rerun the same "
                      "command to resume", file=sys.stderr)
                return 130
            print(json.dumps(result) if args.json else _format_search(result))
        elif args.command == "retrain":
            from evoprune.retrain import RetrainConfig, run_retrain

            config = RetrainConfig(**{k: getattr(args, k) for k in (
                "storage", "study_name", "top_k", "mode", "epochs", "lr", "batch_size",
                "device", "seed", "data_root", "baseline")})
            rows = run_retrain(config, progress=_print_search_event())
            print(json.dumps(rows) if args.json else _format_retrain(rows))
        elif args.command == "analyze":
            from evoprune.analysis.report import AnalyzeConfig, run_analysis

            config = AnalyzeConfig(
                storage=args.storage, study_names=tuple(args.study_name or ()), out=args.out,
                best=args.best, winners=args.winners, winner_fraction=args.winner_fraction,
                n_boot=args.n_boot, level=args.level, seed=args.seed,
                predict=tuple(args.predict), attach=args.attach, artifact_dir=args.artifact_dir)
            data = run_analysis(config)
            for w in data["warnings"]:
                print(f"warning: {w}", file=sys.stderr)
            print(json.dumps(data) if args.json else _format_analysis(data, config))
        elif args.command == "reproduce":
            from evoprune.reproduce import load_config, run_reproduce

            config = load_config(args.config, quick=args.quick, storage=args.storage,
                                 out=args.out, device=args.device)
            raw = list(argv) if argv is not None else sys.argv[1:]
            command = shlex.join(["python", "scripts/reproduce.py",
                                  *raw[raw.index("reproduce") + 1:]])
            try:
                data = run_reproduce(config, command=command,
                                     progress=lambda line: print(line, flush=True))
            except KeyboardInterrupt:
                print("\ninterrupted: the storage keeps every COMPLETE trial; rerun the same "
                      "command to resume", file=sys.stderr)
                return 130
            if args.json:
                print(json.dumps(data))
        elif args.command == "bench":
            from evoprune import bench

            if args.bench == "search":
                bad = [c for c in args.cases if c not in bench.SEARCH_CASES]
                if bad or args.n_trials < 1 or args.n_synthetic < 1:
                    raise EvopruneError(f"bench search takes cases from "
                                        f"{', '.join(bench.SEARCH_CASES)} and positive sizes")
                rows = bench.bench_search(args.cases, n_trials=args.n_trials,
                                          n_synthetic=args.n_synthetic, device=args.device)
                print("\n".join(json.dumps(r) for r in rows) if args.json
                      else bench.format_search_rows(rows))
                return 0
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
