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

from evoprune.core.config import to_tree
from evoprune.core.machine import DEFAULT_PRECISION, resolve_precision
from evoprune.errors import EvopruneError
from evoprune.network.models import build_model
from evoprune.searching.baselines import CRITERIA, check_criteria
from evoprune.searching.objective import ProxyConfig, check_objectives
from evoprune.spaces import PruningSpace
from evoprune.store.schema import identity_of
from evoprune.store.storage import DEFAULT_STORAGE, check_storage
from evoprune.training.base import BaseConfig
from evoprune.training.data import dataset_info
from evoprune.training.engine import resolve_device
from evoprune.training.retraining import RetrainSettings

SAMPLERS = ("nsga2", "random", "tpe")


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
            raise EvopruneError(f"`population` must be at least 2, got {self.population}")


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
        for name, value, low in (("`n_trials`", self.n_trials, self.uniform_seeds + 1),
                                 ("`n_workers`", self.n_workers, 1),
                                 ("`uniform_seeds`", self.uniform_seeds, 1)):
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
    """The study's objectives: given ones the bands leave free, else val_drop plus what varies.

    A budget range (--c-flops LO:HI) adds flops: the study returns the accuracy–FLOPs front.
    Otherwise params is added where no band fixes it; where one does, val_drop stands alone.
    """
    fixed = pinned(space)
    if given is None:
        extra = "flops" if "flops" not in fixed else "params" if "params" not in fixed else None
        return ("val_drop",) + ((extra,) if extra else ())
    names = check_objectives(given)
    for name in names:
        if name in fixed:
            raise EvopruneError(f"objective {name} carries no information: {fixed[name]} fixes "
                                f"it; leave it out of `objectives`")
    return names


def validate(config: SearchConfig) -> None:
    """Check what the tree's own checks cannot, before any model is built or storage opened."""

    base = config.base
    if base.checkpoint is not None and not os.path.isfile(base.checkpoint):
        raise EvopruneError(f"checkpoint {base.checkpoint} does not exist: train one with "
                            "`evoprune train --out FILE`, or leave --checkpoint out")
    if not config.name() or "/" in config.name():
        raise EvopruneError(f"bad study name {config.name()!r}")

    resolve_precision(config.precision, resolve_device(config.device).type)
    info = dataset_info(base.dataset, base.data_root)
    check_storage(config.storage, n_workers=config.n_workers)
    try:
        build_model(base.model, info.num_classes, info.in_shape)  # unknown names fail here
    except EvopruneError:
        raise
    except Exception as exc:
        raise EvopruneError(f"cannot build model {base.model!r}: {exc}") from None
