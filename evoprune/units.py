"""Prunable units: the channel groups a recipe assigns ratios to, from Torch-Pruning's DepGraph.

A unit is one group of coupled channels. Removing channel j of a unit removes filter j of every
*producer* (a conv or linear whose output channels the group holds), entry j of the BNs and
depthwise convs that follow, and input channel j of every *consumer*. A group with one producer is
`internal` (the paper prunes these: convs inside residual blocks, plain conv chains); a group whose
channels several producers share through skip connections is `residual` (a stage's width), and
is searched only when asked for. The classifier's output and the network input are never pruned.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError

INTERNAL, RESIDUAL = "internal", "residual"


@dataclass(frozen=True)
class Unit:
    """One prunable channel group: its name (its first producer), width and the layers it cuts."""

    name: str
    channels: int
    kind: str
    producers: tuple[str, ...]  # convs/linears whose filters are removed
    followers: tuple[str, ...]  # BNs and depthwise convs whose channels go with the filters
    consumers: tuple[str, ...]  # layers whose input channels are removed


@dataclass(frozen=True)
class Units:
    """The ordered prunable units of a model at an input shape."""

    units: tuple[Unit, ...]
    in_shape: tuple[int, int, int]
    residual: bool
    output_layer: str

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units)

    @property
    def names(self) -> list[str]:
        """Unit names in recipe order."""
        return [u.name for u in self.units]

    @property
    def channels(self) -> np.ndarray:
        """Original channel counts in recipe order (int64)."""
        return np.array([u.channels for u in self.units], dtype=np.int64)

    def describe(self) -> list[dict[str, Any]]:
        """Return names, kinds and channel counts as plain data (for JSON and study attrs)."""
        return [{"name": u.name, "kind": u.kind, "channels": u.channels} for u in self.units]


@contextmanager
def preserved_mode(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag afterwards (DepGraph tracing sets eval)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def output_layer(model: nn.Module, in_shape: Sequence[int]) -> str:
    """Name the last conv or linear the forward pass runs: the classifier, never pruned."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with preserved_mode(model), torch.no_grad():
            model.eval()
            model(example_input(model, in_shape))
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise EvopruneError("the model has no Conv2d or Linear layer to prune")
    return order[-1]


def example_input(model: nn.Module, in_shape: Sequence[int]) -> torch.Tensor:
    """Return a batch of one zero image on the model's device and dtype."""
    p = next(model.parameters(), None)
    return torch.zeros(1, *in_shape, device=p.device if p is not None else "cpu",
                       dtype=p.dtype if p is not None else torch.float32)


TRACE_SIZE = 32  # the dependency graph does not depend on image size: trace small when we can


def build_graph(model: nn.Module, in_shape: Sequence[int]) -> Any:
    """Trace Torch-Pruning's DependencyGraph of `model` without changing its train/eval mode.

    Large inputs are traced at TRACE_SIZE first (same layers, same coupling, a fraction of the
    time); a model that cannot run at that size is traced at its own shape.
    """
    import torch_pruning as tp

    shape = tuple(int(s) for s in in_shape)
    small = (shape[0], *(min(s, TRACE_SIZE) for s in shape[1:]))
    for trial in dict.fromkeys((small, shape)):
        with preserved_mode(model), torch.enable_grad():
            try:
                return tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_input(model, trial), verbose=False)
            except Exception as exc:
                error = exc
    raise EvopruneError(f"cannot trace the model at input shape {shape}: "
                        f"{type(error).__name__}: {error}") from None


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _split_group(graph: Any, group: Any, names: Mapping[nn.Module, str]) -> tuple[list, list, list]:
    """Sort a group's parameterised layers into producers, followers and consumers."""
    producers, followers, consumers = [], [], []
    for dep, _ in group:
        m = dep.target.module
        if m not in names or not isinstance(m, nn.Module) or next(m.parameters(False), None) is None:
            continue  # pure ops (add, relu, flatten) carry no parameters
        if graph.is_out_channel_pruning_fn(dep.handler) or _is_depthwise(m):
            target = producers if isinstance(m, (nn.Conv2d, nn.Linear)) and not _is_depthwise(m) \
                else followers
        elif graph.is_in_channel_pruning_fn(dep.handler):
            target = consumers
        else:
            continue
        if names[m] not in target:
            target.append(names[m])
    return producers, followers, consumers


def find_units(model: nn.Module, in_shape: Sequence[int], *, residual: bool = False) -> Units:
    """Find the prunable units of `model` in a stable order (module order of their first producer)."""
    shape = tuple(int(s) for s in in_shape)
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    last = output_layer(model, shape)
    modules = dict(model.named_modules())
    graph = build_graph(model, shape)
    found: list[Unit] = []
    groups = graph.get_all_groups(ignored_layers=[modules[last]],
                                  root_module_types=(nn.Conv2d, nn.Linear))
    for group in groups:
        producers, followers, consumers = _split_group(graph, group, names)
        if not producers:
            continue
        producers.sort(key=order.__getitem__)
        kind = INTERNAL if len(producers) == 1 else RESIDUAL
        if kind == RESIDUAL and not residual:
            continue
        channels = _out_channels(modules[producers[0]])
        found.append(Unit(producers[0], channels, kind, tuple(producers),
                          tuple(sorted(followers, key=order.__getitem__)),
                          tuple(sorted(consumers, key=order.__getitem__))))
    found.sort(key=lambda u: order[u.name])
    if not found:
        raise EvopruneError("the model has no prunable channel group (is it a single layer?)")
    return Units(tuple(found), shape, residual, last)  # type: ignore[arg-type]


def _out_channels(m: nn.Module) -> int:
    return int(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)


def check_recipe(units: Units, recipe: Sequence[float] | Mapping[str, float]) -> np.ndarray:
    """Validate a recipe (a list in unit order or a {unit: ratio} map) and return it as an array."""
    if isinstance(recipe, Mapping):
        unknown = sorted(set(recipe) - set(units.names))
        if unknown:
            raise EvopruneError(f"recipe names unknown unit(s) {', '.join(unknown[:5])}; "
                                f"units are {', '.join(units.names[:8])}{', …' if len(units) > 8 else ''}")
        recipe = [recipe.get(n, 0.0) for n in units.names]
    try:
        r = np.asarray(recipe, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvopruneError("a recipe must be a list of numbers, one pruning ratio per unit") from None
    if r.ndim != 1 or len(r) != len(units):
        raise EvopruneError(f"the recipe has {r.size} ratios but the model has {len(units)} "
                            "prunable units: give one ratio per unit")
    bad = np.flatnonzero(~np.isfinite(r) | (r < 0) | (r >= 1))
    if bad.size:
        i = int(bad[0])
        raise EvopruneError(f"ratio {r[i]} for unit {units.names[i]} is outside [0, 1): every "
                            "ratio must be a number with 0 <= r < 1")
    return r


def kept_channels(channels: np.ndarray, recipe: np.ndarray, round_to: int = 1) -> np.ndarray:
    """Return kept channels round(c·(1−r)) (half up), a multiple of `round_to`, at least one.

    A unit with ratio 0 keeps all its channels whatever `round_to` is (it is not pruned).
    """
    if round_to < 1:
        raise EvopruneError(f"round_to must be a positive integer, got {round_to}")
    exact = channels * (1.0 - recipe) / round_to
    kept = np.minimum(np.maximum(np.floor(exact + 0.5).astype(np.int64) * round_to, round_to),
                      channels)
    return kept if round_to == 1 else np.where(recipe == 0, channels, kept)
