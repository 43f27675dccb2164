"""The `evoprune` command: a table of subcommands, each an argument builder, a runner, a formatter.

Runners parse nothing and print nothing: they turn the parsed arguments into one library
call. Arguments of the configuration trees are named by their field's dotted path
(`dest="proxy.epochs"`) and default to the field's own default, so adding a flag touches the
argument and the field, nothing else (docs/architecture.md, "Configuration").
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from evoprune import __version__
from evoprune.bench import suite as bench
from evoprune.cli.progress import EventPrinter
from evoprune.core.checkpoint import check_writable
from evoprune.core.config import default_of, from_tree, merge, nest, overrides, read_toml
from evoprune.core.machine import DEFAULT_PRECISION, PRECISIONS
from evoprune.errors import EvopruneError, NonFiniteLossError, NonFiniteOutputError
from evoprune.experiments.precision_check import PrecisionCheck
from evoprune.searching import run_search
from evoprune.searching.baselines import CRITERIA
from evoprune.searching.config import SAMPLERS, SamplerConfig, SearchConfig
from evoprune.searching.objective import IMPORTANCES, OBJECTIVES, ProxyConfig
from evoprune.searching.recipe_jobs import PruneJob, SampleJob, run_prune, run_sample
from evoprune.searching.run import run_baselines
from evoprune.spaces import PruningSpace
from evoprune.store.storage import (
    DEFAULT_STORAGE,
    StorageRecovered,
    check_study_name,
    storage_fault,
)
from evoprune.training.base import BaseConfig, TrainJob, run_train
from evoprune.training.retraining import RETRAIN_MODES, RetrainConfig, RetrainSettings, run_retrain
from evoprune.training.splits import DEFAULT_VAL_SIZE, FASHION_ROOT

NOT_TREE = ("command", "json", "bench", "argv", "config_file", "set")  # configure no tree field
PRECISION_HELP = ("fp32, or bf16 autocast (2x on CPUs with AVX-512 BF16 or AMX, and GPUs); auto "
                  "picks bf16 where the device computes it natively")
STORAGE_HELP = ("sqlite:///FILE.db (default studies/evoprune.db), journal:FILE.log (several "
                "workers) or postgresql://… (several machines)")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message` on one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _study_name(value: str) -> str:
    """A --study-name as typed; an empty or blank one is refused (leave the flag out instead)."""

    try:
        check_study_name(value)
    except EvopruneError as exc:
        raise argparse.ArgumentTypeError(in_flags(str(exc), {"study_name": "--study-name"})) from None
    return value


def _writable(args: argparse.Namespace, *flags: str) -> None:
    """Check that each output path given (--out, --onnx) can be written, before any work."""

    for flag in flags:
        path = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if path is not None:
            check_writable(path, flag)


def _tree_arg(group: Any, flag: str, dest: str, default: Any, help: str, **kw: Any) -> None:
    """A flag of a configuration tree: dotted dest, the field's default shown, not repeated."""
    shown = "" if default is None or kw.get("action") == "store_true" else f" (default {default})"
    group.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=help + shown, **kw)


def _tree(args: argparse.Namespace, *roots: str) -> dict[str, Any]:
    """The nested tree of the arguments whose dest starts with one of `roots` (or all)."""

    flat = {k: v for k, v in vars(args).items() if k not in NOT_TREE}
    if roots:
        flat = {k: v for k, v in flat.items() if k.split(".")[0] in roots}
    return nest(flat)


def _rungs(value: str) -> tuple[int, ...]:
    """--rungs 0,1,4 as a tuple of epochs (argparse's error otherwise)."""
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"write epochs per rung as 0,1,4, got {value!r}") from None


class _FlopsBudget(argparse.Action):
    """--c-flops C, or LO:HI (a budget range: space.c_flops LO, space.c_flops_max HI)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any,
                 option: Any = None) -> None:
        """Set space.c_flops (and space.c_flops_max for a range); one-line error otherwise."""
        try:
            parts = [float(v) for v in str(value).split(":")]
        except ValueError:
            parser.error(f"--c-flops takes a number or LO:HI, got {value!r}")
        if len(parts) > 2:
            parser.error(f"--c-flops takes a number or LO:HI, got {value!r}")
        setattr(namespace, "space.c_flops", parts[0])
        if len(parts) == 2:
            setattr(namespace, "space.c_flops_max", parts[1])


# ------------------------------------------------------------------------- argument builders
def _base_args(p: argparse.ArgumentParser, prefix: str = "base.", checkpoint: bool = True) -> None:

    d = BaseConfig()
    g = p.add_argument_group("base network and data")
    _tree_arg(g, "--model", f"{prefix}model", d.model,
              "zoo model (resnet20/32/56/110, vgg16, mobilenetv2, resnet18, resnet50, "
              "tv_mobilenetv2, digitsnet), torchvision:NAME (any torchvision CNN classifier, "
              "e.g. torchvision:densenet121) or package.module:callable")
    _tree_arg(g, "--dataset", f"{prefix}dataset", d.dataset,
              "digits, fashion-mnist, cifar10, cifar100, imagefolder or "
              "synthetic[:CxHxW[:classes]]")
    _tree_arg(g, "--data-root", f"{prefix}data_root", d.data_root,
              f"dataset folder (fashion-mnist: default {FASHION_ROOT}; imagefolder reads its "
              "class names)")
    _tree_arg(g, "--residual", f"{prefix}residual", d.residual,
              "also prune channel groups coupled by skip connections (stage widths)",
              action="store_true")
    _tree_arg(g, "--val-size", f"{prefix}val_size", d.val_size,
              "validation split carved from the training set (stratified, fixed): a fraction, "
              "or a number of images; every selection reads it, the test split is report only",
              type=float)
    _tree_arg(g, "--train-size", f"{prefix}train_size", d.train_size,
              "train on a stratified, fixed subset of the rest: a fraction or a number of "
              "images (default all)", type=float)
    if checkpoint:
        _tree_arg(g, "--checkpoint", f"{prefix}checkpoint", d.checkpoint,
                  "trained base weights (a search without one trains and caches them in "
                  "checkpoints/ beside the storage)")


def _space_args(p: argparse.ArgumentParser) -> None:

    d = PruningSpace(c_flops=0.5)
    g = p.add_argument_group("pruning space")
    g.add_argument("--c-flops", dest="space.c_flops", default=argparse.SUPPRESS,
                   action=_FlopsBudget, metavar="C or LO:HI",
                   help="FLOPs band centre, FLOPs(sub)/FLOPs(orig); a range LO:HI searches every "
                        "budget in it and returns the accuracy-FLOPs front")
    _tree_arg(g, "--delta", "space.delta", d.delta, "band half-width", type=float)
    _tree_arg(g, "--c-params", "space.c_params", None,
              "params band centre: params(sub)/params(orig)", type=float)
    _tree_arg(g, "--c-mcb", "space.c_mcb", None, "mean computation budget (Eq. 2), e.g. 1.0",
              type=float)
    _tree_arg(g, "--mcb-tol", "space.mcb_tol", d.mcb_tol, "mCB tolerance", type=float)
    _tree_arg(g, "--c-std", "space.c_std", None, "standard deviation of the recipe (STD space)",
              type=float)
    _tree_arg(g, "--r-max", "space.r_max", d.r_max, "largest ratio of a unit", type=float)
    _tree_arg(g, "--round-to", "space.round_to", d.round_to,
              "keep a multiple of N channels per unit (e.g. 8 for tensor cores)", type=int,
              metavar="N")


def _search_args(p: argparse.ArgumentParser) -> None:

    _base_args(p)
    _tree_arg(p, "--base-epochs", "base.epochs", BaseConfig().epochs,
              "epochs of the cached base training without --checkpoint", type=int)
    _space_args(p)
    proxy = p.add_argument_group("proxy fine-tune")
    d = ProxyConfig()
    _tree_arg(proxy, "--proxy-epochs", "proxy.epochs", d.epochs, "proxy fine-tune epochs",
              type=int)
    _tree_arg(proxy, "--proxy-lr", "proxy.lr", d.lr, "proxy lr (cosine)", type=float)
    _tree_arg(proxy, "--proxy-batch-size", "proxy.batch_size", None,
              "default 32 on digits (45 steps an epoch), 128 elsewhere", type=int)
    _tree_arg(proxy, "--screen", "proxy.screen", d.screen, "cheap pre-screen: recalibrate BN, "
              "prune weak trials before the fine-tune", choices=("adaptive-bn",))
    _tree_arg(proxy, "--screen-keep", "proxy.screen_keep", d.screen_keep,
              "fraction the screen lets through", type=float)
    _tree_arg(proxy, "--rungs", "proxy.rungs", None, "successive halving over proxy fidelity: "
              "epochs per rung, e.g. 0,1,4 (0: adaptive BN only); each rung a fresh fine-tune "
              "from the pruned weights, the last rung's drop the trial's value (it replaces "
              "--proxy-epochs); trials not promoted end PRUNED", type=_rungs, metavar="T,T,…")
    _tree_arg(proxy, "--rung-keep", "proxy.rung_keep", d.rung_keep,
              "fraction promoted past each rung, of the trials that reached it", type=float)
    sampler = p.add_argument_group("sampler")
    s = SamplerConfig()
    _tree_arg(sampler, "--sampler", "sampler.name", s.name,
              "nsga2, random (i.i.d., for the EDF analysis) or tpe", choices=SAMPLERS)
    _tree_arg(sampler, "--population", "sampler.population", s.population, "NSGA-II population",
              type=int)
    retrain = p.add_argument_group("retraining of the winners")
    r = default_of(SearchConfig, "retrain")
    _tree_arg(retrain, "--top-k", "retrain.top_k", r.top_k,
              "then fully retrain the k best trials, the uniform recipe and the heuristics",
              type=int)
    _tree_arg(retrain, "--retrain-mode", "retrain.mode", r.mode, "retraining technique",
              choices=RETRAIN_MODES)
    _tree_arg(retrain, "--retrain-epochs", "retrain.epochs", r.epochs, "retraining epochs",
              type=int)
    _tree_arg(retrain, "--retrain-seeds", "retrain.seeds", r.seeds,
              "seeds each retrained network gets (paired across networks)", type=int)
    run = p.add_argument_group("the run")
    for flag, name, help, kw in (
            ("--n-trials", "n_trials", "COMPLETE trials of the study in total, over all runs and "
                                       "workers", {"type": int}),
            ("--seed", "seed", "random seed; trial j fine-tunes with a seed of it and j alone, "
                               "so studies sharing it pair their trials", {"type": int}),
            ("--uniform-seeds", "uniform_seeds", "trials of the uniform recipe, one seed each "
                                                 "(the proxy's seed noise)", {"type": int}),
            ("--storage", "storage", STORAGE_HELP, {}),
            ("--study-name", "study_name", "default: MODEL-DATASET-SPACE-fC_FLOPS",
             {"type": _study_name}),
            ("--n-workers", "n_workers", "worker processes on this machine (needs a journal or "
                                         "RDB storage)", {"type": int}),
            ("--device", "device", "auto, cpu or cuda[:i]", {}),
            ("--precision", "precision", PRECISION_HELP, {"choices": PRECISIONS})):
        _tree_arg(run, flag, name, default_of(SearchConfig, name), help, **kw)
    _baselines_arg(run)
    _config_args(run)
    _tree_arg(run, "--objectives", "objectives", None,
              f"comma list from {','.join(OBJECTIVES)}, all minimised; default val_drop plus "
              "what the bands leave free: params under a FLOPs band, flops under a params "
              "band or a budget range, nothing more under an mCB band; a fixed objective is "
              "refused",
              type=lambda s: tuple(o.strip() for o in s.split(",") if o.strip()))
    p.add_argument("--json", action="store_true", help="print one final JSON object")


def _criteria(text: str) -> tuple[str, ...]:
    """--baselines: a comma list of criteria, or none."""
    if text.strip() == "none":
        return ()
    return tuple(c.strip() for c in text.split(",") if c.strip())


def _baselines_arg(group: Any) -> None:

    _tree_arg(group, "--baselines", "baselines", ",".join(CRITERIA),
              "heuristic allocations (Torch-Pruning's global criteria) queued as labelled "
              "trials after the uniform ones, a warm start in the wide space; none to skip",
              type=_criteria)


def _baselines_cmd_args(p: argparse.ArgumentParser) -> None:

    _base_args(p)
    _tree_arg(p, "--base-epochs", "base.epochs", BaseConfig().epochs,
              "epochs of the cached base training without --checkpoint", type=int)
    _space_args(p)
    g = p.add_argument_group("scoring")
    _baselines_arg(g)
    _tree_arg(g, "--proxy-epochs", "proxy.epochs", ProxyConfig().epochs,
              "proxy fine-tune epochs of each allocation", type=int)
    for flag, name, help in (("--seed", "seed", "the proxy fine-tune's seed derives from it"),
                             ("--storage", "storage", "where the base checkpoint is cached "
                                                      "(checkpoints/ beside it)"),
                             ("--device", "device", "auto, cpu or cuda[:i]")):
        _tree_arg(g, flag, name, default_of(SearchConfig, name), help,
                  **({"type": int} if name == "seed" else {}))
    _tree_arg(g, "--precision", "precision", default_of(SearchConfig, "precision"),
              PRECISION_HELP, choices=PRECISIONS)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _run_baselines(args: argparse.Namespace) -> Any:

    return run_baselines(search_config(args), progress=EventPrinter())


def _format_baselines(r: Any) -> str:
    lines = [f"{r['model']} on {r['dataset']}, {r['space']} {r['bands']}: base "
             f"{100 * r['base_val_acc']:.2f}% (validation); proxy {r['proxy_epochs']} epoch(s), "
             f"seed {r['seed']}, the same for every row",
             f"{'allocation':<10} {'FLOPs':>7} {'params':>7} {'mCB':>6} {'std':>6} "
             f"{'val drop':>9}  kept channels per unit"]
    for row in r["rows"]:
        lines.append(f"{row['name']:<10} {row['flops_ratio']:7.4f} {row['params_ratio']:7.4f} "
                     f"{row['mcb']:6.3f} {row['recipe_std']:6.3f} {row['val_drop']:7.2f} pp  "
                     f"{' '.join(map(str, row['kept']))}"
                     + ("" if row["in_space"] else "  (outside the space's other bands)")
                     + (f"  [{row['note']}]" if row["note"] and "repaired" in row["note"] else ""))
    lines.append(f"units: {', '.join(r['units'])}")
    return "\n".join(lines)


def _payoff_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the plan, e.g. studies/fashion-mnist-payoff.toml")
    p.add_argument("--quick", action="store_true", help="its [quick] table: the machinery in minutes")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite report.md and summary.json from the storage, run nothing")
    p.add_argument("--readme", metavar="FILE",
                   help="also rewrite FILE's block between the payoff markers (the README's table)")
    p.add_argument("--gap", action="store_true",
                   help="run the plan's [gap] arms instead (what closes the gap to the best "
                        "heuristic) on copies of its wide studies; gap.md and gap.json")


def _run_payoff(args: argparse.Namespace) -> Any:
    """`evoprune payoff`: the plan run (or only its report written)."""
    # deferred: scipy.stats loads only for the commands that analyse (a faster CLI start)
    from evoprune.experiments.payoff import (
        has_markers,
        load_payoff,
        readme_block,
        run_payoff,
        update_readme,
        write_report,
    )

    if args.gap:
        if args.quick or args.readme:
            raise EvopruneError("--gap runs the plan's [gap] table: leave out --quick and --readme")
        from evoprune.experiments.gap import load_gap, run_gap, write_gap  # deferred: as above

        payoff, gap = load_gap(args.config)
        say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
        return write_gap(payoff, gap) if args.report_only else run_gap(payoff, gap, say,
                                                                       EventPrinter())
    config = load_payoff(args.config, quick=args.quick)
    if args.readme and not has_markers(args.readme):  # before anything is written
        raise EvopruneError(f"{args.readme} has no payoff markers: add the two comment lines "
                            "where the table goes")
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    summary = write_report(config) if args.report_only else run_payoff(config, say,
                                                                        EventPrinter())
    if args.readme:
        update_readme(args.readme, readme_block(summary))
    return summary


def _prune_args(p: argparse.ArgumentParser) -> None:

    _base_args(p, prefix="")
    p.add_argument("--recipe", required=True,
                   help="uniform:R, a JSON file (list of ratios or {unit: ratio}), or study:NAME:TRIAL")
    p.add_argument("--importance", default="l2", choices=IMPORTANCES,
                   help="filter ranking (default l2, the paper's)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep a multiple of N channels per unit (e.g. 8 for tensor cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of --importance random")
    p.add_argument("--out", help="save the pruned model here (load with evoprune.load_pruned)")
    p.add_argument("--onnx", help="also export the pruned model to ONNX (needs onnx)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage for study:NAME:TRIAL")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _train_args(p: argparse.ArgumentParser) -> None:

    p.add_argument("--model", default="resnet20",
                   help="zoo model, torchvision:NAME (e.g. torchvision:densenet121) "
                        "or package.module:callable")
    p.add_argument("--dataset", default="digits", help="digits (default), fashion-mnist, cifar10, "
                                                       "cifar100, imagefolder, "
                                                       "synthetic[:CxHxW[:classes]]")
    p.add_argument("--data-root", help="dataset folder (CIFAR in torchvision's layout; "
                                       f"fashion-mnist: default {FASHION_ROOT})")
    p.add_argument("--download", action="store_true", help="download CIFAR if absent")
    p.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up epochs")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="default 0")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--val-size", dest="val_size", type=float, default=DEFAULT_VAL_SIZE,
                   help="validation split carved from the training set: a fraction or a number "
                        f"of images (default {DEFAULT_VAL_SIZE})")
    p.add_argument("--train-size", dest="train_size", type=float,
                   help="train on a stratified, fixed subset of the rest: a fraction or a number "
                        "of images (default all)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help=PRECISION_HELP + f" (default {DEFAULT_PRECISION})")
    p.add_argument("--out", help="checkpoint file, written every epoch; rerun to resume")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward (pays off on long runs)")
    p.add_argument("--json", action="store_true", help="print one final JSON object")


def _sample_args(p: argparse.ArgumentParser) -> None:
    _base_args(p, checkpoint=False)
    _space_args(p)
    p.add_argument("--n", type=int, default=10, help="recipes to draw (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per recipe on stdout (summary on stderr)")


def _retrain_args(p: argparse.ArgumentParser) -> None:
    """`evoprune retrain`: its tree (RetrainConfig) from flags, --config FILE and --set."""
    d = RetrainSettings()
    S = argparse.SUPPRESS  # an untyped flag leaves the file's value or the field's default
    p.add_argument("--storage", default=S, help=f"the study's storage URL (default {DEFAULT_STORAGE})")
    p.add_argument("--study-name", dest="study_name", default=S, type=_study_name,
                   help="the study to retrain from (required, here or in the --config file)")
    _tree_arg(p, "--top-k", "settings.top_k", d.top_k, "best trials to retrain", type=int)
    _tree_arg(p, "--mode", "settings.mode", d.mode, "retraining technique", choices=RETRAIN_MODES)
    _tree_arg(p, "--epochs", "settings.epochs", d.epochs, "retraining epochs", type=int)
    _tree_arg(p, "--lr", "settings.lr", None, "default: 0.01 for finetune, 0.1 otherwise",
              type=float)
    _tree_arg(p, "--batch-size", "settings.batch_size", d.batch_size, "batch size", type=int)
    _tree_arg(p, "--no-baseline", "settings.baseline", None,
              "do not retrain the uniform baseline", action="store_false")
    _tree_arg(p, "--seeds", "settings.seeds", d.seeds,
              "seeds per network (seed, seed+1, …), paired across networks", type=int)
    _tree_arg(p, "--random-k", "settings.random_k", d.random_k,
              "also retrain k trials drawn without selection (the proxy's fidelity)", type=int)
    p.add_argument("--device", default=S, help="auto (default), cpu or cuda[:i]")
    p.add_argument("--precision", default=S, choices=PRECISIONS,
                   help=PRECISION_HELP + f" (default {DEFAULT_PRECISION})")
    p.add_argument("--seed", type=int, default=S, help="random seed (default 0)")
    p.add_argument("--data-root", dest="data_root", default=S,
                   help="dataset folder, if not the study's")
    p.add_argument("--model", default=S,
                   help="the study's package:callable model, named again to import it (a "
                        "storage's model name is data: only built-in models are built from it)")
    _config_args(p, "a TOML file of RetrainConfig's tree (study_name, storage, [settings] …)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _analyze_args(p: argparse.ArgumentParser) -> None:

    p.add_argument("--storage", default=DEFAULT_STORAGE, help="the studies' storage URL")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--study-name", nargs="+", metavar="NAME", type=_study_name,
                       help="studies to analyse")
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


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="studies/digits.toml",
                   help="the study set (default studies/digits.toml)")
    p.add_argument("--quick", action="store_true",
                   help="the set's [quick] table: a few minutes, for tests and a first look")
    p.add_argument("--full", action="store_true",
                   help="the set's [full] table: the whole training set (the GPU plan)")
    p.add_argument("--storage", help="the studies' storage URL (default: the set's)")
    p.add_argument("--out", help="folder for report.md, summary.json and figures "
                                 "(default: the set's)")
    p.add_argument("--device", help="auto, cpu or cuda[:i] (default: the set's)")
    p.add_argument("--compare-with", metavar="SUMMARY_JSON",
                   help="another set's summary.json, set beside this one in the report "
                        "(default: the set's compare_with)")
    p.add_argument("--json", action="store_true", help="print summary.json's object")


def _bench_args(p: argparse.ArgumentParser) -> None:

    sub = p.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    cost = sub.add_parser("cost", help="analytic cost model against FlopCounterMode, and "
                                       "pruning time")
    cost.add_argument("--models", nargs="+",
                      help="models to time (default resnet56 resnet50 torchvision:densenet121 "
                           "torchvision:regnet_x_400mf)")
    cost.add_argument("--repeats", type=int, default=5, help="timings per figure (median)")
    space = sub.add_parser("space", help="decoded recipes per second against the "
                                         "rejection sampler")
    space.add_argument("--models", nargs="+",
                       help="models to time (default resnet56 resnet50)")
    space.add_argument("--c-flops", type=float, default=0.25, help="band centre (default 0.25)")
    space.add_argument("--n", type=int, default=2000, help="genotypes decoded in one batch")
    space.add_argument("--seconds", type=float, default=5.0,
                       help="time given to the rejection sampler per case (default 5)")
    sample = sub.add_parser("sample", help="recipes/s of `evoprune sample` (the block "
                                           "sampler) against the Gibbs path before it")
    sample.add_argument("--cases", nargs="+", default=["resnet50-mcb", "resnet56-flops-params"],
                        help="resnet50-mcb (c_flops 0.25, mCB 1.0) and/or resnet56-flops-params "
                             "(c_flops 0.25, c_params 0.3)")
    sample.add_argument("--n", type=int, default=2000, help="recipes the new path draws "
                                                            "(default 2000)")
    sample.add_argument("--n-old", type=int, default=200, help="recipes the old path draws "
                                                               "(default 200)")
    sample.add_argument("--residual", action="store_true",
                        help="residual-coupled units too (their residual widths become hubs; "
                             "Gibbs where that is slower)")
    train = sub.add_parser("train", help="training images/s against a DataLoader loop")
    train.add_argument("--cases", nargs="+",
                       default=["resnet20-digits", "resnet20-28px", "resnet56-cifar"],
                       help="resnet20-digits, resnet20-28px (synthetic, Fashion-MNIST-shaped) "
                            "and/or resnet56-cifar (synthetic, CIFAR-shaped)")
    train.add_argument("--epochs", type=int, default=1, help="epochs per loop (default 1)")
    train.add_argument("--batch-size", type=int, default=128, help="default 128")
    train.add_argument("--n-synthetic", type=int, default=2048,
                       help="training images of the synthetic case (default 2048; 50000 on a GPU)")
    train.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    train.add_argument("--sweep", action="store_true",
                       help="instead: time the engine's options (threads, batch size, "
                            "channels_last, torch.compile) on the first case")
    search = sub.add_parser("search", help="the search's own overhead per trial against "
                                           "training time")
    search.add_argument("--cases", nargs="+", default=["resnet20-digits", "resnet56-synthetic"],
                        help="resnet20-digits and/or resnet56-synthetic (CIFAR-shaped)")
    search.add_argument("--n-trials", type=int, default=6, help="timed trials per case (default 6)")
    search.add_argument("--n-synthetic", type=int, default=2048,
                        help="training images of the synthetic case (default 2048)")
    search.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    coverage = sub.add_parser("coverage", help="torchvision's (or timm's) CNN families: units, "
                                               "exact cost, pruned run, round trip, decode, "
                                               "seconds")
    coverage.add_argument("--models", nargs="+",
                          help="model names of the zoo (default: one per family)")
    coverage.add_argument("--zoo", choices=("torchvision", "timm"), default="torchvision",
                          help="torchvision (default) or timm (pip install 'evoprune[timm]')")
    coverage.add_argument("--size", type=int,
                          help="input side in pixels (default 224, timm 64; each model's "
                               "smallest if larger)")
    precision = sub.add_parser("precision", help="fp32 against bf16 autocast: base training "
                                                 "and proxy fine-tune accuracy, and speed "
                                                 "(resnet20 on Fashion-MNIST)")
    precision.add_argument("--data-root", help=f"Fashion-MNIST's folder (default {FASHION_ROOT})")
    check = PrecisionCheck()
    precision.add_argument("--recipes", type=int, default=check.recipes,
                           help=f"recipes fine-tuned both ways (default {check.recipes}, plus the "
                                "uniform one)")
    precision.add_argument("--base-epochs", type=int, default=check.base_epochs,
                           help=f"epochs of each base training (default {check.base_epochs}; "
                                "cached)")
    precision.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")
    for q in (cost, space, sample, train, search, coverage, precision):
        q.add_argument("--json", action="store_true", help="print one JSON object per case")


# ----------------------------------------------------------------------------------- runners
def _run_prune(args: argparse.Namespace) -> Any:

    _writable(args, "--out", "--onnx")
    return run_prune(PruneJob(**{k: getattr(args, k) for k in PruneJob.__dataclass_fields__
                                 if hasattr(args, k)}))


def _run_train(args: argparse.Namespace) -> Any:

    _writable(args, "--out")
    job = TrainJob(**{k: getattr(args, k) for k in TrainJob.__dataclass_fields__})
    for key in ("val_size", "train_size"):  # a count, parsed as a float
        value = getattr(job, key)
        if value is not None and value >= 1 and float(value).is_integer():
            job = replace(job, **{key: int(value)})
    return run_train(job, progress=_print_epoch(job.epochs))


def _run_sample(args: argparse.Namespace) -> Any:

    tree = _tree(args)
    tree.setdefault("space", {})
    return run_sample(from_tree(SampleJob, tree))


def search_config(args: argparse.Namespace) -> Any:
    """The SearchConfig of parsed `search` arguments: defaults < --config file < flags < --set."""

    tree = read_toml(args.config_file) if getattr(args, "config_file", None) else {}
    tree = merge(merge(tree, _tree(args)), overrides(getattr(args, "set", None) or [],
                                                     SearchConfig))
    tree.setdefault("space", {})
    return from_tree(SearchConfig, tree)


def _config_args(p: argparse.ArgumentParser, what: str = (
        "a TOML file of the configuration tree ([base], [space], [proxy], [sampler], [retrain] "
        "and the run's keys)")) -> None:
    """--config FILE and --set KEY=VALUE: the job's whole tree in a file, and overrides."""
    p.add_argument("--config", dest="config_file", metavar="FILE",
                   help=f"{what}; flags and --set win over it")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one field: proxy.epochs=2, proxy_epochs=2 or top_k=3 "
                        "(repeatable)")


def _run_search(args: argparse.Namespace) -> Any:

    return run_search(search_config(args), progress=EventPrinter())


def retrain_config(args: argparse.Namespace) -> Any:
    """The RetrainConfig of parsed `retrain` arguments: defaults < --config file < flags < --set."""
    tree = read_toml(args.config_file) if getattr(args, "config_file", None) else {}
    tree = merge(merge(tree, _tree(args)), overrides(getattr(args, "set", None) or [],
                                                     RetrainConfig))
    if not tree.get("study_name"):
        raise EvopruneError("`study_name` is required: the study to retrain from")
    check_study_name(tree["study_name"])
    return from_tree(RetrainConfig, tree)


def _run_retrain(args: argparse.Namespace) -> Any:
    """`evoprune retrain`: a study's winners retrained with seeds."""
    return run_retrain(retrain_config(args), progress=EventPrinter())


def _run_analyze(args: argparse.Namespace) -> Any:
    """`evoprune analyze`: EDFs, laws and verdicts of the stored studies."""
    # deferred: scipy.stats loads only for the commands that analyse (a faster CLI start)
    from evoprune.analysis.report import AnalyzeConfig, run_analysis

    config = AnalyzeConfig(
        storage=args.storage, study_names=tuple(args.study_name or ()), out=args.out,
        best=args.best, winners=args.winners, winner_fraction=args.winner_fraction,
        n_boot=args.n_boot, level=args.level, seed=args.seed, predict=tuple(args.predict),
        attach=args.attach, artifact_dir=args.artifact_dir)
    data = run_analysis(config)
    for w in data["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return {**data, "artifact_dir": config.artifact_dir}


def _run_reproduce(args: argparse.Namespace) -> Any:
    """`evoprune reproduce`: a study set run end to end."""
    # deferred: scipy.stats loads only for the commands that analyse (a faster CLI start)
    from evoprune.experiments.reproduce import load_config, run_reproduce

    config = load_config(args.config, quick=args.quick, full=args.full, storage=args.storage,
                         out=args.out, device=args.device, compare_with=args.compare_with)
    command = shlex.join(["python", "scripts/reproduce.py",
                          *args.argv[args.argv.index("reproduce") + 1:]])
    bars = EventPrinter()  # on a terminal: each search's and retraining's live bar
    return run_reproduce(config, command=command, progress=lambda line: print(line, flush=True),
                         events=bars if bars.live else None)


def _run_bench(args: argparse.Namespace) -> Any:

    options = {k: v for k, v in vars(args).items() if k not in NOT_TREE}
    return bench.run_bench(args.bench, **options)


# -------------------------------------------------------------------------------- formatters
def _format_prune(r: dict[str, Any]) -> str:
    shape = "x".join(str(s) for s in r["in_shape"])
    lines = [f"{r['model']} on {r['dataset']} ({shape}): {len(r['units'])} units, importance "
             f"{r['importance']}" + (f", round to {r['round_to']}" if r["round_to"] > 1 else "")]
    width = max(len("unit"), *(len(n) for n in r["units"]))
    lines.append(f"{'unit':<{width}}  {'kind':<8}  {'channels':>8}  {'kept':>6}  {'ratio':>6}")
    for name, kind, c, k, ratio in zip(r["units"], r["kinds"], r["original_channels"],
                                       r["channels"], r["recipe"]):
        lines.append(f"{name:<{width}}  {kind:<8}  {c:>8}  {k:>6}  {ratio:>6.3f}")
    lines.append(f"\n{'':<7}{'original':>16}{'pruned':>16}{'ratio':>9}")
    for label, base, now, ratio in (
        ("FLOPs", r["base_flops"], r["flops"], r["flops_ratio"]),
        ("MACs", r["base_macs"], r["macs"], r["flops_ratio"]),
        ("params", r["base_params"], r["params"], r["params_ratio"]),
    ):
        lines.append(f"{label:<7}{base:>16,}{now:>16,}{ratio:>9.4f}")
    lines.append(f"mCB (Eq. 2) {r['mcb']:.4f}")
    if r["out"]:
        lines.append(f"saved {r['out']} (sha256 {r['sha256'][:16]}…)")
    if r.get("onnx"):
        lines.append(f"exported {r['onnx']}")
    return "\n".join(lines)


def _format_train(r: dict[str, Any]) -> str:
    return (f"validation accuracy {100 * r['val_acc']:.2f}%, test accuracy "
            f"{100 * r['test_acc']:.2f}% after {r['epochs_run']} epochs, "
            f"{r['seconds']:.1f} s of training, {r['images_per_s']:,.0f} images/s on "
            f"{r['device']}" + (f"; saved {r['out']}" if r["out"] else ""))


def _format_sample(r: dict[str, Any]) -> str:
    s = r["summary"]
    lines = [f"{r['label']} space of {r['model']} ({len(r['units'])} units) {r['bands']}",
             f"{'#':>4} {'FLOPs':>7} {'params':>7} {'mCB':>6} {'std':>6}  recipe"]
    for i, row in enumerate(r["recipes"]):
        recipe = " ".join(f"{v:.2f}" for v in row["recipe"])
        lines.append(f"{i:>4} {row['flops_ratio']:>7.4f} {row['params_ratio']:>7.4f} "
                     f"{row['mcb']:>6.3f} {row['std']:>6.4f}  {recipe}")
    lines.append(f"{s['inside']}/{s['n']} inside every band ({100 * s['hit_rate']:.1f}%), "
                 f"{s['recipes_per_s']:,.0f} recipes/s; uniform baseline: FLOPs "
                 f"{r['uniform']['flops_ratio']:.4f}, params {r['uniform']['params_ratio']:.4f}, "
                 f"mCB {r['uniform']['mcb']:.3f}")
    return "\n".join(lines)


def _json_sample(r: dict[str, Any]) -> str:
    """One JSON line per recipe on stdout; the summary goes to stderr."""
    print(json.dumps({"summary": r["summary"], "space": r["space"], "uniform": r["uniform"]}),
          file=sys.stderr)
    return "\n".join(json.dumps(row) for row in r["recipes"])


def _format_trials(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'trial':>5} {'val drop':>8} {'FLOPs':>7} {'params':>7} {'mCB':>6} {'std':>6} "
             f"{'retrained test drop':>20}"]
    for r in rows:
        re = r.get("retrain") or []
        retrained = (f"{sum(x['test_drop'] for x in re) / len(re):.2f} ({re[0]['mode']} "
                     f"{re[0]['epochs']}, {len(re)} seeds)") if re else "-"
        lines.append(f"{r['number']:>5} {r['val_drop']:>8.2f} {r['flops_ratio']:>7.4f} "
                     f"{r['params_ratio']:>7.4f} {r['mcb']:>6.3f} {r['recipe_std']:>6.3f} "
                     f"{retrained:>20}{'  uniform' if r['is_uniform'] else ''}"
                     f"{'  baseline ' + r['criterion'] if r.get('criterion') else ''}")
    return lines


def _format_search(r: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {k}" for k, n in sorted(r["states"].items()))
    test = r.get("base_test_acc")
    lines = [f"study {r['study']} in {r['storage']}: {states}; base accuracy "
             f"{100 * r['base_val_acc']:.2f}% ({r['split']})"
             + (f", {100 * test:.2f}% (test)" if test is not None and r["split"] != "test" else "")
             + f"; {r['seconds']:.1f} s", f"best trials (proxy, on the {r['split']} split):"]
    lines += _format_trials(r["best"])
    if r["uniform"] is not None and r["uniform"] not in r["best"]:
        lines += _format_trials([r["uniform"]])[1:]
    lines.append(f"open the dashboard:  {r['dashboard']}")
    if r["best"]:
        lines.append(f"export the best:     evoprune prune --storage {r['storage']} --recipe "
                     f"study:{r['study']}:{r['best'][0]['number']} --out best.pt")
    return "\n".join(lines)


def _format_retrain(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'trial':>5} {'chosen':>16} {'seed':>4} {'mode':>9} {'epochs':>6} {'val drop':>8} "
             f"{'test acc':>8} {'test drop':>9}  model"]
    for r in rows:
        lines.append(f"{r['number']:>5} {r['chosen_as']:>16} {r['seed']:>4} {r['mode']:>9} "
                     f"{r['epochs']:>6} {r['val_drop']:>8.2f} {100 * r['test_acc']:>7.2f}% "
                     f"{r['test_drop']:>9.2f}  {r.get('model_path', '')}"
                     + ("  (already done)" if r["skipped"] else ""))
    by: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["number"], []).append(r)
    if by:
        def mean(xs: list[dict[str, Any]], key: str) -> float:
            return sum(x[key] for x in xs) / len(xs)

        best = min(by.values(), key=lambda xs: (mean(xs, "val_drop"), xs[0]["number"]))
        lines.append(f"winner (lowest mean validation drop over its {len(best)} seed(s)): trial "
                     f"{best[0]['number']} ({best[0]['chosen_as']}), val {mean(best, 'val_drop'):.2f} "
                     f"pp, test {mean(best, 'test_drop'):.2f} pp")
    return "\n".join(lines)


def _format_analysis(d: dict[str, Any]) -> str:
    lines = [f"{len(d['studies'])} studies, {len(d['regimes'])} regimes analysed in "
             f"{d['seconds']:.1f} s"]
    for r in d["regimes"]:
        c = r["optimal_mcb"]["center"]
        lines.append(f"  c_{r['regime']} = {r['target']:g}: optimal mCB {c['estimate']:.3f} "
                     f"[{c['lo']:.3f}, {c['hi']:.3f}], best drop "
                     f"{r['optimal_mcb']['best_drop']['estimate']:.2f} pp"
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
                     f"{d['storage']} --artifact-dir {d['artifact_dir']}")
    return "\n".join(lines)


def _print_epoch(epochs: int) -> Callable[[dict[str, float]], None]:
    """A progress line per epoch on stderr: epoch, loss, accuracies, images/s."""
    def show(r: dict[str, float]) -> None:
        print(f"epoch {int(r['epoch']):>3}/{epochs}  loss {r['loss']:.4f}  train "
              f"{100 * r['train_acc']:5.1f}%  val {100 * r['val_acc']:5.1f}%  "
              f"{r['images_per_s']:,.0f} img/s", file=sys.stderr, flush=True)
    return show


def _json(r: Any) -> str:
    return json.dumps(r)


def _json_rows(rows: Any) -> str:
    return "\n".join(json.dumps(r) for r in rows)


def _format_bench(r: Any) -> str:
    return r[1]


def _json_bench(r: Any) -> str:
    return _json_rows(r[0])


@dataclass(frozen=True)
class Command:
    """A subcommand: its help, argument builder, runner and formatters (text and --json)."""

    help: str
    build: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Any]
    text: Callable[[Any], str | None]
    json: Callable[[Any], str] = _json
    interruptible: bool = False  # Ctrl-C says how to resume (exit 130)


COMMANDS: dict[str, Command] = {
    "prune": Command("prune a model to a recipe and report its exact cost", _prune_args,
                     _run_prune, _format_prune),
    "train": Command("train a model from scratch (the base network)", _train_args, _run_train,
                     _format_train),
    "sample": Command("draw i.i.d. recipes from a pruning space", _sample_args, _run_sample,
                      _format_sample, _json_sample),
    "search": Command("search a pruning space with Optuna (NSGA-II); resumable, scales out over "
                      "workers", _search_args, _run_search, _format_search, interruptible=True),
    "baselines": Command("heuristic allocations (Torch-Pruning's global L2, Taylor, LAMP, BN "
                         "scale) bisected into a FLOPs band, each proxy-scored", _baselines_cmd_args,
                         _run_baselines, _format_baselines),
    "retrain": Command("fully retrain the top-k trials of a study and its uniform baseline",
                       _retrain_args, _run_retrain, _format_retrain),
    "analyze": Command("EDFs, optimal mCB and the drop-limit law from study storages: figures "
                       "and a report", _analyze_args, _run_analyze, _format_analysis),
    "reproduce": Command("run a study set (studies/*.toml) end to end and test the paper's "
                         "observations", _reproduce_args, _run_reproduce, lambda _r: None,
                         interruptible=True),
    "payoff": Command("does the search pay? uniform, heuristics, the mCB- and wide-space "
                      "winners retrained alike per regime and replicate (studies/*-payoff.toml)",
                      _payoff_args, _run_payoff, lambda _r: None, interruptible=True),
    "bench": Command("benchmarks (each prints its machine, sizes and ratios)", _bench_args,
                     _run_bench, _format_bench, _json_bench),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of every subcommand."""

    parser = _Parser(prog="evoprune", description="Search network pruning spaces of trained CNNs.")
    parser.add_argument("--version", action="version", version=f"evoprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        command.build(p)
        if name in SHOWN:
            _hide_rare(p, SHOWN[name])
    return parser


SHOWN = {"search": {"-h", "--c-flops", "--c-mcb", "--c-std", "--model", "--dataset",
                    "--checkpoint", "--n-trials", "--storage", "--study-name", "--device",
                    "--top-k", "--config", "--set"}}  # what --help lists (--help-all: the rest)


class _HelpAll(argparse.Action):
    """--help-all: every option of the command, the rarely typed ones too."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any,
                 option: Any = None) -> None:
        """Restore the hidden options' help, print it all, exit 0."""
        for action, text in parser.hidden_help.items():
            action.help = text
        parser.print_help()
        parser.exit()


def _hide_rare(p: argparse.ArgumentParser, shown: set[str]) -> None:
    """Hide the options a user seldom types from --help (they work, --help-all lists them)."""
    hidden = {}
    for action in p._actions:
        if action.option_strings and not set(action.option_strings) & shown:
            hidden[action] = action.help
            action.help = argparse.SUPPRESS
    p.hidden_help = hidden  # type: ignore[attr-defined]
    p.add_argument("--help-all", action=_HelpAll, nargs=0, dest=argparse.SUPPRESS,
                   default=argparse.SUPPRESS,
                   help=f"list all {len(hidden) + len(shown) + 1} options: the others set one "
                        "field of the configuration each, as --set KEY=VALUE does")


@contextmanager
def _one_line_notices(command: str) -> Iterator[None]:
    """Print the storage's repair notices (`storage.StorageRecovered`) as one line each."""
    import warnings


    with warnings.catch_warnings():
        warnings.simplefilter("always", StorageRecovered)
        shown = warnings.showwarning

        def show(message: Any, category: Any, *rest: Any, **kw: Any) -> None:
            if issubclass(category, StorageRecovered):
                print(f"evoprune {command}: {message}", file=sys.stderr, flush=True)
            else:
                shown(message, category, *rest, **kw)

        warnings.showwarning = show
        yield


def flag_table(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The one table from the library's field names to this command's flags: `val_size` is
    --val-size, `proxy_epochs` --proxy-epochs (a flag's name with `_` for `-`)."""
    table: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                table = {**flag_table(sub), **table}
        for option in action.option_strings:
            if option.startswith("--"):
                table[option[2:].replace("-", "_")] = option
    return table


def in_flags(message: str, table: dict[str, str]) -> str:
    """A library message with each field it names (`c_std`) written as its flag (--c-std)."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: table.get(m.group(1), m.group(0)), message)


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The subcommand's own parser."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `evoprune` command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    command = COMMANDS[args.command]
    try:
        with _one_line_notices(args.command):
            result = command.run(args)
        text = command.json(result) if getattr(args, "json", False) else command.text(result)
    except KeyboardInterrupt:
        if not command.interruptible:
            raise
        print("\ninterrupted: the storage keeps every COMPLETE trial; rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    except EvopruneError as exc:
        table = flag_table(_command_parser(parser, args.command))
        print(f"evoprune {args.command}: error: {in_flags(str(exc), table)}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"evoprune {args.command}: training diverged: {exc}; lower --lr", file=sys.stderr)
        return 1
    except NonFiniteOutputError as exc:
        print(f"evoprune {args.command}: the model's outputs are not finite: {exc}; check the "
              "checkpoint and the data (NaN or inf in the weights or inputs)", file=sys.stderr)
        return 1
    except Exception as exc:  # a full disk or a corrupted storage met below: one line, exit 2

        fault = storage_fault(exc, getattr(args, "storage", None))
        if fault is None:
            raise
        print(f"evoprune {args.command}: error: {fault}", file=sys.stderr)
        return 2
    if text is not None:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
