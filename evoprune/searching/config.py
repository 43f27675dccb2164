"""The search's configuration tree: base network, space, proxy, sampler, retraining, run.

One frozen dataclass per concern (docs/architecture.md, "Configuration"); each default and its
comment are written once, here or in the concern's own module (`PruningSpace` in spaces,
`ProxyConfig` in objective, `RetrainSettings` in retrain). The CLI builds each group from its
own argument group; the study stores `stored_tree()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from evoprune.config import to_tree
from evoprune.errors import EvopruneError
from evoprune.machine import DEFAULT_PRECISION
from evoprune.objective import ProxyConfig, check_objectives
from evoprune.retrain import RetrainSettings
from evoprune.schema import identity_of
from evoprune.searching.baselines import CRITERIA, check_criteria
from evoprune.spaces import PruningSpace
from evoprune.splits import DEFAULT_VAL_SIZE
from evoprune.storage import DEFAULT_STORAGE

SAMPLERS = ("nsga2", "random", "tpe")


@dataclass(frozen=True)
class BaseConfig:
    """The trained network to prune and its data."""

    model: str = "resnet20"  # a zoo name, torchvision:NAME or package.module:callable
    dataset: str = "digits"  # digits, fashion-mnist, cifar10, cifar100, imagefolder, synthetic…
    data_root: str | None = None  # the dataset's folder (CIFAR, ImageFolder)
    residual: bool = False  # also prune channel groups coupled by skip connections
    checkpoint: str | None = None  # trained weights; None: train once and cache
    epochs: int = 30  # epochs of that cached base training
    val_size: float | int = DEFAULT_VAL_SIZE  # validation carved from training: fraction or count
    train_size: float | int | None = None  # stratified training subset of the rest; None: all

    def __post_init__(self) -> None:
        """Refuse settings no base can use."""
        if self.epochs < 1:
            raise EvopruneError(f"--base-epochs must be at least 1, got {self.epochs}")
        if not (0 < self.val_size < 1 or (self.val_size >= 1 and float(self.val_size).is_integer())):
            raise EvopruneError(f"--val-size must be a fraction in (0, 1) or a whole number of "
                                f"images, got {self.val_size}")
        if self.val_size >= 1:  # a count of images (the CLI parses every value as a float)
            object.__setattr__(self, "val_size", int(self.val_size))
        if self.train_size is not None:
            if not (0 < self.train_size < 1 or (self.train_size >= 1
                                                and float(self.train_size).is_integer())):
                raise EvopruneError(f"--train-size must be a fraction in (0, 1) or a whole number "
                                    f"of images, got {self.train_size}")
            if self.train_size >= 1:
                object.__setattr__(self, "train_size", int(self.train_size))


@dataclass(frozen=True)
class SamplerConfig:
    """The Optuna sampler that proposes genotypes."""

    name: str = "nsga2"  # nsga2, random (i.i.d., for the EDF analysis) or tpe
    population: int = 16  # NSGA-II's population

    def __post_init__(self) -> None:
        """Refuse unknown samplers and populations NSGA-II cannot breed."""
        if self.name not in SAMPLERS:
            raise EvopruneError(f"unknown sampler {self.name!r}: choose {', '.join(SAMPLERS)}")
        if self.population < 2:
            raise EvopruneError(f"--population must be at least 2, got {self.population}")


def default_proxy_batch(dataset: str) -> int:
    """32 on digits (1,437 images: 45 steps an epoch, enough to recover), else 128."""
    return 32 if dataset == "digits" else 128


@dataclass(frozen=True)
class SearchConfig:
    """Everything `evoprune search` does, as one frozen tree."""

    space: PruningSpace
    base: BaseConfig = field(default_factory=BaseConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    retrain: RetrainSettings = field(default_factory=lambda: RetrainSettings(top_k=0))
    objectives: tuple[str, ...] | None = None  # all minimised; None: what the space lets vary
    n_trials: int = 32  # COMPLETE trials of the study in total (the uniform ones included)
    uniform_seeds: int = 3  # the uniform recipe's trials (its proxy seed noise)
    baselines: tuple[str, ...] = CRITERIA  # heuristic allocations queued after the uniform ones
    # (in a single FLOPs band only: a params band or a FLOPs range has none)
    seed: int = 0  # sampler, proxy and retraining seeds derive from it
    storage: str = DEFAULT_STORAGE  # sqlite:///…, journal:….log or an RDB URL
    study_name: str | None = None  # None: MODEL-DATASET-SPACE-fC_FLOPS
    n_workers: int = 1  # worker processes on this machine
    device: str = "auto"  # auto, cpu or cuda[:i]
    precision: str = DEFAULT_PRECISION  # auto, fp32 or bf16 (autocast; auto: where native)

    def __post_init__(self) -> None:
        """Resolve the proxy batch of the dataset and check the counts."""
        if self.proxy.batch_size is None:
            object.__setattr__(self, "proxy", replace(
                self.proxy, batch_size=default_proxy_batch(self.base.dataset)))
        object.__setattr__(self, "objectives", objectives_for(self.space, self.objectives))
        banded = self.space.c_flops is not None and self.space.c_flops_max is None
        object.__setattr__(self, "baselines", check_criteria(self.baselines) if banded else ())
        for name, value, low in (("--n-trials", self.n_trials, self.uniform_seeds + 1),
                                 ("--n-workers", self.n_workers, 1),
                                 ("--uniform-seeds", self.uniform_seeds, 1)):
            if value < low:
                raise EvopruneError(f"{name} must be at least {low}, got {value}")

    def name(self) -> str:
        """The study name: given, or derived from model, dataset and space."""
        if self.study_name:
            return self.study_name
        s = self.space
        parts = [self.base.model, self.base.dataset, s.label]
        if s.c_flops is not None:
            top = getattr(s, "c_flops_max", None)
            parts.append(f"f{s.c_flops:g}" + (f"-{top:g}" if top is not None else ""))
        if s.c_params is not None:
            parts.append(f"p{s.c_params:g}")
        if self.base.residual:
            parts.append("residual")
        return "-".join(parts).replace(":", "_")

    def stored_tree(self) -> dict[str, Any]:
        """The tree a study stores: the parts that define its trials (not where it runs)."""
        tree = to_tree(self)
        tree["space"] = self.space.to_dict()
        for key in ("storage", "study_name", "n_workers", "device", "n_trials", "retrain",
                    "uniform_seeds", "precision", "baselines"):
            tree.pop(key)
        tree["base"].pop("checkpoint")
        return tree

    def identity(self) -> dict[str, Any]:
        """What a resumed study must share with the stored one (else its trials mix)."""
        return identity_of(self.stored_tree())


def pinned(space: PruningSpace) -> dict[str, str]:
    """Objectives the space's bands fix, each with the band that fixes it."""
    out = {}
    if space.c_flops is not None and getattr(space, "c_flops_max", None) is None:
        out["flops"] = f"the FLOPs band {space.c_flops:g}±{space.delta:g}"
    if space.c_params is not None:
        out["params"] = f"the params band {space.c_params:g}±{space.delta:g}"
    elif space.c_mcb is not None:
        out["params"] = f"the mCB band {space.c_mcb:g}±{space.mcb_tol:g} at c_flops {space.c_flops:g}"
    return out


def objectives_for(space: PruningSpace, given: tuple[str, ...] | None) -> tuple[str, ...]:
    """The study's objectives: given ones the bands leave free, else acc_drop plus what varies.

    A budget range (--c-flops LO:HI) adds flops: the study returns the accuracy–FLOPs front.
    Otherwise params is added where no band fixes it; where one does, acc_drop stands alone.
    """
    fixed = pinned(space)
    if given is None:
        extra = "flops" if "flops" not in fixed else "params" if "params" not in fixed else None
        return ("acc_drop",) + ((extra,) if extra else ())
    names = check_objectives(given)
    for name in names:
        if name in fixed:
            raise EvopruneError(f"objective {name} carries no information: {fixed[name]} fixes "
                                f"it; leave it out of --objectives")
    return names


def validate(config: SearchConfig) -> None:
    """Check what the tree's own checks cannot, before any model is built or storage opened."""
    from evoprune.data import dataset_info
    from evoprune.models import build_model
    from evoprune.storage import check_storage
    from evoprune.train import resolve_device

    base = config.base
    if base.checkpoint is not None and not os.path.isfile(base.checkpoint):
        raise EvopruneError(f"checkpoint {base.checkpoint} does not exist: train one with "
                            "`evoprune train --out FILE`, or leave --checkpoint out")
    if not config.name() or "/" in config.name():
        raise EvopruneError(f"bad study name {config.name()!r}")
    from evoprune.machine import resolve_precision

    resolve_precision(config.precision, resolve_device(config.device).type)
    info = dataset_info(base.dataset, base.data_root)
    check_storage(config.storage, n_workers=config.n_workers)
    try:
        build_model(base.model, info.num_classes, info.in_shape)  # unknown names fail here
    except EvopruneError:
        raise
    except Exception as exc:
        raise EvopruneError(f"cannot build model {base.model!r}: {exc}") from None
