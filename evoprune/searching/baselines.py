"""Heuristic baselines: Torch-Pruning's one-shot global allocations, bisected into the FLOPs band.

A *global* criterion scores every channel of every unit with Torch-Pruning's group importance
(its defaults: the group's scores averaged over its layers, then divided by their mean, LAMP's
own normalisation for LAMP) and removes the lowest-scoring channels network-wide: one threshold
for all units, each unit keeping at least what r_max allows (`MetaPruner(global_pruning=True,
max_pruning_ratio=r_max)`). The threshold is bisected so the pruned network's exact FLOPs
ratio lands in the band c_flops ± delta. Where no threshold does (one channel more or less
jumps over a thin band), the allocation just above the band is repaired into it by the
fewest single-unit steps (`spaces.repair`), which keeps its shape. Only the allocation (kept
channels per unit) is the baseline's: which filters go is evoprune's own L2 choice, exactly
as for a searched recipe, so a baseline and a search winner differ only in their allocation.

Criteria: l2 (`GroupMagnitudeImportance(p=2)`), taylor (`GroupTaylorImportance`: weight ×
gradient, the gradients of a few training batches), lamp (`LAMPImportance(p=2)`), bn_scale
(`BNScaleImportance`: |γ| of the group's BatchNorms).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from evoprune.errors import EvopruneError
from evoprune.network.units import build_graph, frozen_mappings, kept_channels
from evoprune.searching.genes import gene_names
from evoprune.spaces import Decoder, PruningSpace
from evoprune.spaces.repair import repair
from evoprune.store.schema import UNIT_NAMES

if TYPE_CHECKING:
    import torch
    from torch import nn

    from evoprune.network.cost import CostModel
    from evoprune.network.units import Units

CRITERIA = ("l2", "taylor", "lamp", "bn_scale")  # Torch-Pruning's global criteria
TAYLOR_BATCHES = 8  # training batches whose gradients the Taylor criterion accumulates
TAYLOR_SEED = 0  # their draw: a heuristic's allocation does not depend on the search's seed

Batches = Callable[[], Iterable[tuple["torch.Tensor", "torch.Tensor"]]]  # a fresh, seeded epoch


@dataclass(frozen=True)
class Baseline:
    """One heuristic allocation: its kept channels and exact figures, and how it was found."""

    criterion: str
    kept: tuple[int, ...]
    recipe: tuple[float, ...]
    flops_ratio: float
    params_ratio: float
    mcb: float
    recipe_std: float
    repaired: int  # single-unit steps the repair took (0: the bisection landed in the band)
    in_space: bool  # inside every band of the study's space (not only the FLOPs band)
    note: str  # what a user should know: repaired, outside the space's other bands, …

    def to_attrs(self) -> dict[str, Any]:
        """The user_attrs a baseline trial is enqueued with."""
        return {"role": "baseline", "criterion": self.criterion,
                "baseline_kept": [int(k) for k in self.kept]}


def check_criteria(names: Sequence[str]) -> tuple[str, ...]:
    """Validate criterion names; return them as a tuple (empty: no baselines)."""
    names = tuple(names)
    bad = [n for n in names if n not in CRITERIA]
    if bad:
        raise EvopruneError(f"unknown baseline criterion {', '.join(bad)}: choose from "
                            f"{', '.join(CRITERIA)}")
    if len(set(names)) != len(names):
        raise EvopruneError(f"baseline criterion listed twice in {','.join(names)}")
    return names


def _importance(criterion: str) -> Any:
    """Torch-Pruning's importance object of a criterion, with its default settings."""
    import torch_pruning as tp

    return {"l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "taylor": lambda: tp.importance.GroupTaylorImportance(),
            "lamp": lambda: tp.importance.LAMPImportance(p=2),
            "bn_scale": lambda: tp.importance.BNScaleImportance()}[criterion]()


def accumulate_gradients(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                         n: int = TAYLOR_BATCHES) -> int:
    """Sum the cross-entropy gradients of up to n batches into `model`'s .grad (eval mode)."""
    import torch

    model.eval()  # running statistics stay as trained
    model.zero_grad()
    done = 0
    for x, y in batches:
        x, y = x.to("cpu", torch.float32), y.to("cpu")
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        done += 1
        if done >= n:
            break
    return done


def channel_scores(base: nn.Module, units: Units, criterion: str,
                   batches: Batches | None = None) -> list[np.ndarray]:
    """Each unit's channel scores under a global criterion (comparable across units)."""

    if criterion not in CRITERIA:
        check_criteria([criterion])
    model = copy.deepcopy(base).cpu().float()
    if criterion == "taylor" and (batches is None or not accumulate_gradients(model, batches())):
        raise EvopruneError("the taylor criterion needs training batches (its gradients)")
    graph = build_graph(model, units.in_shape)
    modules = dict(model.named_modules())
    scorer = _importance(criterion)
    out = []
    with frozen_mappings():
        for unit in units:
            rows = []
            for root in unit.root_layers:
                module = modules[root]
                pruner = graph.get_pruner_of_module(module)
                group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                                list(range(unit.channels)))
                score = scorer(group)
                if score is not None:
                    rows.append(score.double().detach().cpu().numpy())
            # a unit without the criterion's layers (no BN for bn_scale) scores its mean: 1
            out.append(np.mean(rows, axis=0) if rows else np.ones(unit.channels))
    return out


def seeded_batches(data: Any, batch_size: int = 128, seed: int = TAYLOR_SEED) -> Batches:
    """An epoch of un-augmented training batches of built-in data, the same on every call."""
    import torch

    return lambda: data.train_batches(batch_size, torch.Generator().manual_seed(seed),
                                      augment=False)


def _min_kept(cost: CostModel, r_max: float, rounding: Any) -> np.ndarray:
    """The fewest channels each unit may keep (its ratio at most r_max)."""
    return kept_channels(cost.channels, np.full((1, len(cost.channels)), r_max), rounding)[0]


def kept_at(scores: Sequence[np.ndarray], threshold: float, floor: np.ndarray,
            cost: CostModel, rounding: Any) -> np.ndarray:
    """Kept channels per unit when every channel scoring at most `threshold` goes."""
    k = np.array([int((s > threshold).sum()) for s in scores], dtype=np.int64)
    k = np.maximum(k, floor)
    return kept_channels(cost.channels, (1.0 - k / cost.channels)[None], rounding)[0]


def allocate(scores: Sequence[np.ndarray], band: Decoder) -> tuple[np.ndarray, int]:
    """Kept channels in the band's FLOPs window from one global threshold (then repaired).

    Returns the kept channels and the repair's single-unit steps (0 when a threshold landed).
    """
    cost, space = band.cost, band.space
    rounding = cost.rounding(space.round_to)
    floor = _min_kept(cost, space.r_max, rounding)
    lo, hi = band.bound.lo - space.delta, band.bound.hi + space.delta
    cuts = np.concatenate([[-np.inf], np.unique(np.concatenate(scores))])

    def flops(i: int) -> float:
        k = kept_at(scores, float(cuts[i]), floor, cost, rounding)
        return float(cost.batch(k[None])[0][0] / cost.base_flops)

    a, b = 0, len(cuts) - 1  # FLOPs falls as the threshold rises
    if flops(b) > hi:
        raise EvopruneError(f"no threshold reaches FLOPs {hi:.4f}: every unit at r_max "
                            f"{space.r_max:g} still keeps {flops(b):.4f}")
    if flops(a) <= hi:
        b = a
    while b - a > 1:  # invariant: flops(a) > hi >= flops(b)
        mid = (a + b) // 2
        if flops(mid) > hi:
            a = mid
        else:
            b = mid
    kept = kept_at(scores, float(cuts[b]), floor, cost, rounding)
    if flops(b) >= lo:
        return kept, 0
    start = kept_at(scores, float(cuts[max(b - 1, 0)]), floor, cost, rounding)  # above the band
    r, inside = repair(band.bound, (1.0 - start / cost.channels)[None])
    if not inside[0]:
        raise EvopruneError("the allocation could not be repaired into the FLOPs band")
    fixed = kept_channels(cost.channels, r, rounding)[0]
    return fixed, int(np.abs(fixed - start).sum() // np.maximum(np.min(rounding), 1))


def band_of(space: PruningSpace) -> PruningSpace:
    """The space's FLOPs band alone (the baselines' constraint), with its r_max and rounding."""
    if space.c_flops is None:
        raise EvopruneError("baselines need a FLOPs band (c_flops)")
    return PruningSpace(c_flops=space.c_flops, delta=space.delta, r_max=space.r_max,
                        round_to=space.round_to)


def compute_baselines(base: nn.Module, units: Units, decoder: Decoder,
                      criteria: Sequence[str] = CRITERIA, batches: Batches | None = None
                      ) -> list[Baseline]:
    """Each criterion's global allocation in the FLOPs band of `decoder`'s space.

    `batches()` (an epoch of training batches, the same each call) feeds the taylor criterion;
    without it taylor is left out.
    """
    criteria = check_criteria(criteria)
    band = Decoder(band_of(decoder.space), decoder.cost)
    out = []
    for criterion in criteria:
        if criterion == "taylor" and batches is None:
            continue
        scores = channel_scores(base, units, criterion, batches)
        kept, steps = allocate(scores, band)
        d = decoder.describe_kept(kept[None])
        notes = [f"repaired into the band by {steps} single-unit step(s)"] if steps else []
        inside = bool(d.inside[0])
        if not inside:
            notes.append(f"outside the {decoder.space.label} space's other bands: one global "
                         "threshold cannot meet them")
        out.append(Baseline(criterion, tuple(int(k) for k in kept),
                            tuple(float(r) for r in d.recipes[0]), float(d.flops_ratio[0]),
                            float(d.params_ratio[0]), float(d.mcb[0]), float(d.std[0]), steps,
                            inside, "; ".join(notes)))
    return out


def warm_genes(decoder: Decoder, kept: Sequence[int], naming: str = UNIT_NAMES
               ) -> dict[str, float] | None:
    """Genes whose decoding is (close to) these kept channels, in a FLOPs-band-only space.

    The tilt map decodes gene g to the g-quantile of a tilted uniform law; at tilt 0 that is
    g·r_max, so g = r / r_max decodes back to r when r is already in the band. Returns None
    in other spaces (STD, mCB, params), where a baseline stays a labelled trial without genes.
    Keyed by the study's gene names (`searching.genes.gene_names` under `naming`).
    """
    if decoder.space.kind != "initial" or decoder.n_genes != decoder.n:
        return None
    r = 1.0 - np.asarray(kept, dtype=np.float64) / decoder.cost.channels
    g = np.clip(r / decoder.space.r_max, 0.0, 1.0)
    return {name: float(v) for name, v in zip(gene_names(decoder, naming), g, strict=True)}
