"""Apply a recipe: rank filters (L2 norm by default), slice them out through Torch-Pruning.

The result is a physically smaller copy; the original model is never mutated. Filter scores
are taken from the original weights for every unit before any slicing (one-shot, Sec. 2.1).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evoprune.checkpoint import atomic_save, load_file
from evoprune.errors import EvopruneError
from evoprune.objective import IMPORTANCES  # declared with the proxy's settings
from evoprune.units import Unit, Units, build_graph, check_recipe, find_units, kept_channels

FORMAT = "evoprune.pruned/1"


def prune(
    model: nn.Module,
    recipe: Sequence[float] | Mapping[str, float],
    *,
    units: Units | None = None,
    in_shape: Sequence[int] | None = None,
    importance: str = "l2",
    round_to: int = 1,
    seed: int = 0,
) -> nn.Module:
    """Return a pruned copy of `model`: unit i keeps round(c_i·(1−r_i)) filters (at least one)."""
    if units is None:
        if in_shape is None:
            raise EvopruneError("prune needs the model's units or its in_shape")
        units = find_units(model, in_shape)
    kept = kept_channels(units.channels, check_recipe(units, recipe), round_to)
    return prune_channels(model, units, kept, importance=importance, seed=seed)


def prune_channels(
    model: nn.Module,
    units: Units,
    kept: Sequence[int] | np.ndarray,
    *,
    importance: str = "l2",
    seed: int = 0,
) -> nn.Module:
    """Return a copy of `model` keeping `kept[i]` channels of unit i, chosen by `importance`."""
    if importance not in IMPORTANCES:
        raise EvopruneError(f"unknown importance {importance!r}: choose one of {', '.join(IMPORTANCES)}")
    kept = np.asarray(kept, dtype=np.int64)
    if kept.shape != (len(units),) or (kept < 1).any() or (kept > units.channels).any():
        raise EvopruneError(f"kept channels must be {len(units)} counts in [1, channels]")
    new = copy.deepcopy(model)
    todo = [(u, int(k)) for u, k in zip(units, kept) if k < u.channels]
    if not todo:
        return new
    modules = dict(new.named_modules())
    drops = [_drop_indices(u, modules, k, importance, seed + i) for i, (u, k) in enumerate(todo)]
    graph = build_graph(new, units.in_shape)
    for (unit, _), drop in zip(todo, drops):
        root = modules[unit.name]
        pruner = graph.get_pruner_of_module(root)
        graph.get_pruning_group(root, pruner.prune_out_channels, drop).prune()
    return new


def _filters(unit: Unit, modules: Mapping[str, nn.Module]) -> list[torch.Tensor]:
    """Return each producer's filters as rows (channels, fan-in)."""
    return [modules[n].weight.detach().float().reshape(unit.channels, -1) for n in unit.producers]


def _drop_indices(unit: Unit, modules: Mapping[str, nn.Module], keep: int, importance: str,
                  seed: int) -> list[int]:
    """Rank a unit's channels and return the indices of those to remove (lowest scores)."""
    if importance == "random":
        score = torch.rand(unit.channels, generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64)
    elif importance in ("l2", "l1"):  # group norm of the filters the channel owns (squared for l2)
        p = 2 if importance == "l2" else 1
        score = sum(torch.linalg.vector_norm(f, p, dim=1) ** p for f in _filters(unit, modules))
    else:  # fpgm: distance to the other filters; the closest to the geometric median go first
        score = sum(torch.cdist(f, f).sum(1) for f in _filters(unit, modules))
    order = np.argsort(-score.cpu().numpy(), kind="stable")  # highest first, ties by index
    return sorted(int(i) for i in order[keep:])


@dataclass(frozen=True)
class PrunedSpec:
    """Everything needed to rebuild a pruned model's architecture from its base model."""

    model: str
    num_classes: int
    in_shape: tuple[int, int, int]
    residual: bool
    units: tuple[str, ...]
    channels: tuple[int, ...]  # original width per unit
    kept: tuple[int, ...]
    recipe: tuple[float, ...]
    importance: str = "l2"
    round_to: int = 1


def save_pruned(path: str | Path, model: nn.Module, spec: PrunedSpec) -> str:
    """Write the spec and state_dict atomically (loadable with weights_only); return its sha256."""
    from evoprune import __version__

    record = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}
    record.update(format=FORMAT, evoprune_version=__version__,
                  state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()})
    return atomic_save(record, path)


def read_spec(path: str | Path) -> tuple[PrunedSpec, dict[str, torch.Tensor]]:
    """Read a pruned-model file (weights only) into its spec and state_dict."""
    record = load_file(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise EvopruneError(f"{path} is not an evoprune pruned-model file (see `evoprune prune --out`)")
    names = {f for f in PrunedSpec.__dataclass_fields__}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in names}
    return PrunedSpec(**fields), record["state_dict"]


def load_pruned(path: str | Path) -> nn.Module:
    """Rebuild a pruned model from its file: base model, units, kept channels, then weights."""
    from evoprune.models import build_model

    spec, state = read_spec(path)
    base = build_model(spec.model, spec.num_classes, spec.in_shape)
    units = find_units(base, spec.in_shape, residual=spec.residual)
    if tuple(units.names) != spec.units or tuple(int(c) for c in units.channels) != spec.channels:
        raise EvopruneError(f"{path} was saved for other units of {spec.model} than this version "
                            "of the model defines")
    model = prune_channels(base, units, np.array(spec.kept), importance="l2")
    model.load_state_dict(state)
    return model


def export_onnx(model: nn.Module, in_shape: Sequence[int], path: str | Path) -> None:
    """Export to ONNX (needs the optional `onnx` package)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise EvopruneError("ONNX export needs the onnx package: pip install onnx") from None
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript exporter suffices
            torch.onnx.export(model, (torch.zeros(1, *in_shape),), str(path), dynamo=False,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        model.train(was_training)
