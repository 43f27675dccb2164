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
from typing import Any

import numpy as np
import torch
from torch import nn

from evoprune import __version__
from evoprune.core.checkpoint import atomic_save, load_file
from evoprune.errors import EvopruneError
from evoprune.network.models import build_stored
from evoprune.network.units import (
    Unit,
    Units,
    build_graph,
    check_kept,
    find_units,
    frozen_mappings,
    round_recipe,
)

IMPORTANCES = ("l2", "l1", "fpgm", "random")  # filter criteria: norm, L1, geometric median, random

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
    kept = round_recipe(units, recipe, round_to)
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
    kept = check_kept(units, kept)
    new = copy.deepcopy(model)
    todo = [(u, int(k)) for u, k in zip(units, kept) if k < u.channels]
    if not todo:
        return new
    modules = dict(new.named_modules())
    graph = build_graph(new, units.in_shape)
    with frozen_mappings():  # one-shot: every score from the original weights
        drops = [_drop_indices(unit_scores(graph, modules, u, importance, seed + i), u, k)
                 for i, (u, k) in enumerate(todo)]
    for (unit, _), drop in zip(todo, drops):
        grouped = [name for name in unit.followers if _is_grouped(modules.get(name))]
        for root in unit.root_layers:
            module = modules[root]
            pruner = graph.get_pruner_of_module(module)
            group = graph.get_pruning_group(module, pruner.prune_out_channels, drop)
            if grouped:
                _prune_items(graph, group, skip={modules[n] for n in grouped})
            else:
                group.prune()
        for name in grouped:
            _remove_groups(modules[name], drop)
    return new


def _is_grouped(m: nn.Module | None) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and not (m.groups == m.in_channels == m.out_channels)


def _prune_items(graph: Any, group: Any, skip: set[nn.Module]) -> None:
    """Prune a group's layers but those in `skip` (Torch-Pruning's Group.prune, item by item)."""
    for dep, idxs in group:
        target = dep.target
        if target.module in skip:
            continue
        if isinstance(target.module, nn.Parameter):  # an unwrapped parameter: swap it on its owner
            old = target.module
            name = graph._param_to_name.pop(old)
            new = dep(idxs)
            owner = graph.model.get_submodule(name.rpartition(".")[0])
            setattr(owner, name.rpartition(".")[2], new)
            graph._param_to_name[new] = name
            graph.module2node[new] = graph.module2node.pop(old)
            graph.module2node[new].module = new
        else:
            dep(idxs)


def _remove_groups(conv: nn.Conv2d, drop: Sequence[int]) -> None:
    """Remove whole groups from a grouped conv: the groups holding the dropped channels."""
    width = conv.in_channels // conv.groups
    gone = {i // width for i in drop}
    if len(gone) * width != len(drop):
        raise EvopruneError(f"internal: the dropped channels are not whole groups of {width}")
    keep = [g for g in range(conv.groups) if g not in gone]
    per_out = conv.out_channels // conv.groups
    rows = torch.tensor([g * per_out + t for g in keep for t in range(per_out)], dtype=torch.long)
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight[rows].clone(), conv.weight.requires_grad)
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias[rows].clone(), conv.bias.requires_grad)
    conv.groups = len(keep)
    conv.in_channels = len(keep) * width
    conv.out_channels = len(keep) * per_out


def unit_scores(graph: Any, modules: Mapping[str, nn.Module], unit: Unit, importance: str,
                seed: int = 0) -> np.ndarray:
    """Score a unit's channels with Torch-Pruning's group importance over the filters they remove.

    l2/l1: the p-th power norms of every producer's filters, summed (GroupMagnitudeImportance,
    sum reduction, no normalizer); fpgm: FPGMImportance alike. Only the filters a channel owns
    count (the paper's criterion), so on a plain chain l2 ranks as one layer's filter norms.
    """
    if importance == "random":
        return torch.rand(unit.channels, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64).numpy()
    import torch_pruning as tp
    from torch_pruning.pruner import function

    make = {"l2": lambda: tp.importance.GroupMagnitudeImportance(
                p=2, group_reduction="sum", normalizer=None),
            "l1": lambda: tp.importance.GroupMagnitudeImportance(
                p=1, group_reduction="sum", normalizer=None),
            "fpgm": lambda: tp.importance.FPGMImportance(
                p=2, group_reduction="sum", normalizer=None)}[importance]
    scorer = make()
    filters = (function.prune_conv_out_channels, function.prune_linear_out_channels)
    total = np.zeros(unit.channels)
    for root in unit.root_layers:
        module = modules[root]
        pruner = graph.get_pruner_of_module(module)
        group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                        list(range(unit.channels)))
        owned = [item for item in group.items if item.dep.pruning_fn in filters]
        score = scorer(owned)
        if score is not None:
            total += score.double().cpu().numpy()
    return total


def _drop_indices(score: np.ndarray, unit: Unit, keep: int) -> list[int]:
    """Return the channels to remove: the lowest scores, or the lowest-scoring whole groups."""
    step = unit.step
    per = score.reshape(-1, step).sum(1)  # a group's score: all its channels (step 1: each)
    order = np.argsort(-per, kind="stable")  # highest first, ties by index
    gone = sorted(int(g) for g in order[keep // step:])
    return [g * step + t for g in gone for t in range(step)]


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

    record = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}
    state = model.state_dict()
    meta = getattr(state, "_metadata", None) or {}  # module versions (MNASNet checks its own)
    record.update(format=FORMAT, evoprune_version=__version__,
                  state_dict={k: v.detach().cpu() for k, v in state.items()},
                  state_metadata={k: dict(v) for k, v in meta.items()})
    return atomic_save(record, path)


def read_spec(path: str | Path) -> tuple[PrunedSpec, dict[str, torch.Tensor]]:
    """Read a pruned-model file (weights only) into its spec and state_dict."""
    record = load_file(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise EvopruneError(f"{path} is not an evoprune pruned-model file (see `evoprune prune --out`)")
    names = {f for f in PrunedSpec.__dataclass_fields__}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in names}
    return PrunedSpec(**fields), _with_metadata(record["state_dict"], record.get("state_metadata", {}))


def load_pruned(path: str | Path, model: str | None = None) -> nn.Module:
    """Rebuild a pruned model from its file: base model, units, kept channels, then weights.

    The file's model name is data: a built-in model is built from it, a `package:callable` only
    when `model` names it again.
    """

    spec, state = read_spec(path)
    base = build_stored(spec.model, spec.num_classes, spec.in_shape, named=model,
                        where=f"pruned-model file {path}")
    units = find_units(base, spec.in_shape, residual=spec.residual)
    if tuple(units.names) != spec.units or tuple(int(c) for c in units.channels) != spec.channels:
        raise EvopruneError(f"{path} was saved for other units of {spec.model} than this version "
                            "of the model defines")
    model = prune_channels(base, units, np.array(spec.kept), importance="random")  # weights follow
    model.load_state_dict(state)
    return model


def _with_metadata(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Return the state_dict with its module versions restored (`state_dict()._metadata`)."""
    from collections import OrderedDict

    out: Any = OrderedDict(state)
    out._metadata = OrderedDict((k, dict(v)) for k, v in meta.items())
    return out


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
