"""Prunable units: the channel groups a recipe assigns ratios to, from Torch-Pruning's DepGraph.

A unit is one group of coupled channels. Removing channel j of a unit removes filter j of every
*producer* (a conv or linear whose output channels the group holds), entry j of the norms,
depthwise convs and per-channel parameters that follow, and its slice of the input channels of
every *consumer* (a concatenation maps it to an offset; a flatten to a block of features).

- A group whose channels are summed with others (a residual add) is `residual` (a stage's width)
  and searched only when asked for; every other group is `internal` (the paper prunes these).
- A grouped convolution loses whole groups: its inputs and outputs of group g go together, as a
  depthwise conv's do, so the unit that feeds it and the unit it produces are one unit whose
  ratio removes groups (`step` = the group width). The group width, RegNet's and ResNeXt's design
  parameter, survives; the number of groups shrinks. (Removing the same number of channels from
  every group instead would cut ResNeXt's 4-wide groups to 4 levels of width and make its cost
  depend on the group count; whole groups keep the cost linear in the kept channels.)
- A group Torch-Pruning cannot map exactly (a channel shuffle's reshape, a split whose sizes
  the forward fixes, a layer the cost model does not count) is left out, with the reason, in
  `Units.left_out`: its channels stay as they are. The classifier's outputs are never pruned.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from evoprune.errors import EvopruneError

INTERNAL, RESIDUAL = "internal", "residual"
OUT, IN = "out", "in"
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.PReLU)


@dataclass(frozen=True)
class Unit:
    """One prunable channel group: its name (its first producer), width and the layers it cuts."""

    name: str
    channels: int
    kind: str
    producers: tuple[str, ...]  # convs/linears whose filters are removed
    followers: tuple[str, ...]  # norms, depthwise/grouped convs, parameters cut with the filters
    consumers: tuple[str, ...]  # layers whose input channels are removed
    step: int = 1  # kept channels are a multiple of this (a grouped conv's group width)
    roots: tuple[str, ...] = ()  # layers whose output channels index the unit (default: name)
    slices: tuple[tuple[str, str, int], ...] = ()  # (layer, out|in, features per unit channel)

    @property
    def root_layers(self) -> tuple[str, ...]:
        """Layers whose output channels are indexed by the unit's channels."""
        return self.roots or (self.name,)


@dataclass(frozen=True)
class Units:
    """The ordered prunable units of a model at an input shape."""

    units: tuple[Unit, ...]
    in_shape: tuple[int, int, int]
    residual: bool
    output_layer: str
    left_out: tuple[tuple[str, str], ...] = field(default=())  # (layer, why its group stays)

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

    @property
    def steps(self) -> np.ndarray:
        """Channel step per unit in recipe order (1, or a grouped conv's group width)."""
        return np.array([u.step for u in self.units], dtype=np.int64)

    def describe(self) -> list[dict[str, Any]]:
        """Return names, kinds and channel counts as plain data (for JSON and study attrs)."""
        return [{"name": u.name, "kind": u.kind, "channels": u.channels}
                | ({"step": u.step} if u.step > 1 else {}) for u in self.units]


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


def _flattens(node: Any, depth: int = 8) -> bool:
    """True when a reshape's output reaches a Linear through parameter-free ops (a flatten)."""
    seen, frontier = set(), list(node.outputs)
    for _ in range(depth):
        nxt = []
        for n in frontier:
            if n in seen:
                continue
            seen.add(n)
            if isinstance(n.module, nn.Linear):
                return True
            if isinstance(n.module, nn.Module) and next(n.module.parameters(False), None) is not None:
                return False
            nxt.extend(n.outputs)
        frontier = nxt
    return False


def _channel_view(graph: Any, node: Any) -> bool:
    """True when a reshape only adds or drops singleton dimensions (a per-channel view).

    ConvNeXt's layer scale (`gamma.reshape(1, -1, 1, 1)`), ConvNeXt-V2's GRN (`weight.view`),
    ECA's `(B, C) -> (B, 1, C)` and NF-ResNet's `gain.view(-1)` keep every channel where it is;
    a channel shuffle's `view(b, g, c // g, h, w)` splits the channel dimension. The shapes are
    those `_ViewShapes` recorded while the graph was traced.
    """
    shapes = graph.__dict__.get("evoprune_views", {})
    grad_fn = node.grad_fn
    out = shapes.get(grad_fn)
    before = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if out is None or before is None:
        return False
    return [int(d) for d in before if d != 1] == [int(d) for d in out if d != 1]


class _ViewShapes(torch.overrides.TorchFunctionMode):
    """Record the output shape of every view or reshape a traced forward runs, by its grad_fn."""

    def __init__(self, shapes: dict[Any, tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes = shapes

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        grad_fn = getattr(out, "grad_fn", None) if isinstance(out, torch.Tensor) else None
        if grad_fn is not None and ("View" in grad_fn.name() or "Reshape" in grad_fn.name()):
            self.shapes[grad_fn] = tuple(out.shape)
        return out


SHUFFLE = "its channels pass a reshape that mixes them (a channel shuffle)"
FUNCTIONAL_CONV = ("its channels pass a functional conv2d outside any Conv module (an "
                   "anti-aliasing blur pool), whose channel count the forward fixes")


def _opaque(graph: Any, node: Any, why: str) -> None:
    """Record a node whose channel mapping Torch-Pruning cannot give: its groups are left out."""
    graph.__dict__.setdefault("evoprune_opaque", {}).setdefault(node, why)


def _fixed_weight_conv(grad_fn: Any) -> bool:
    """True for a traced convolution whose weight takes no gradient (a blur pool's buffer).

    A Conv module's own convolution can show as an op too (torch 2.3 wraps a 1×1 conv in
    unsqueeze/squeeze), but its weight is a parameter, so it has a gradient path.
    """
    if not grad_fn.name().startswith("Convolution"):
        return False
    nexts = getattr(grad_fn, "next_functions", ())
    return len(nexts) > 1 and nexts[1][0] is None


def _install_reshape_guard() -> None:
    """Let DepGraph survive mappings it cannot compute (a channel shuffle): mark them opaque.

    Torch-Pruning 1.6 divides by zero on `x.view(b, g, c // g, h, w)`, and fails on a
    concatenation or split whose input widths it cannot infer (CSP-Darknet's focus stem); the
    guarded mappings record the node on the graph instead, and `find_units` leaves out every
    group through it. A per-channel view (`_channel_view`) passes its channels through unchanged.
    """
    from torch_pruning import ops

    owner, reshape, _ = _index_mapping_owner()
    original = getattr(owner, reshape)
    if getattr(original, "evoprune_guard", False):
        return

    def guarded(graph: Any, node: Any) -> None:
        if node.type == ops.OPTYPE.RESHAPE and _channel_view(graph, node):
            return  # identity on the channels: no index mapping
        if node.type == ops.OPTYPE.RESHAPE and not _flattens(node):
            _opaque(graph, node, SHUFFLE)
            return  # not a flatten into a classifier: Torch-Pruning would map it as one
        try:
            original(graph, node)
        except (ZeroDivisionError, IndexError, ValueError):
            _opaque(graph, node, SHUFFLE)

    guarded.evoprune_guard = True  # type: ignore[attr-defined]
    setattr(owner, reshape, guarded)
    for name, what in (("concat", "concatenation"), ("split", "split")):
        attr = reshape.replace("reshape", name)
        if hasattr(owner, attr):
            setattr(owner, attr, _guard_widths(getattr(owner, attr), what))


def _guard_widths(original: Any, what: str) -> Any:
    """Guard one index-mapping update: a failure to infer widths leaves the node opaque."""

    def guarded(graph: Any, node: Any) -> None:
        try:
            original(graph, node)
        except (TypeError, ZeroDivisionError, IndexError, ValueError):
            _opaque(graph, node, f"its channels pass a {what} whose input widths Torch-Pruning "
                                 "cannot infer")

    guarded.evoprune_guard = True  # type: ignore[attr-defined]
    return guarded


def _index_mapping_owner() -> tuple[Any, str, str]:
    """Where Torch-Pruning keeps its index-mapping updates: (owner, reshape's, all's) names.

    1.6 has a module `dependency.index_mapping` of functions f(graph, node); 1.5 has methods of
    `DependencyGraph` with the same arguments.
    """
    try:
        from torch_pruning.dependency import index_mapping
    except ImportError:  # Torch-Pruning 1.5
        from torch_pruning.dependency import DependencyGraph

        return DependencyGraph, "_update_reshape_index_mapping", "update_index_mapping"
    return index_mapping, "update_reshape_index_mapping", "update_index_mapping"


@contextmanager
def frozen_mappings() -> Iterator[None]:
    """Skip DepGraph's index-mapping refresh per group while the model is unchanged.

    `get_pruning_group` recomputes every concat/split/reshape mapping on each call; they were
    computed when the graph was built, so many groups of an unpruned model need them only once
    (DenseNet121's 120 groups: several times faster).
    """
    owner, _, update = _index_mapping_owner()
    original = getattr(owner, update)
    setattr(owner, update, lambda graph: None)
    try:
        yield
    finally:
        setattr(owner, update, original)


def _scale_parameters(model: nn.Module) -> dict[nn.Parameter, str]:
    """Per-output-channel parameters a conv or linear holds beside weight and bias (NF's gain)."""
    found: dict[nn.Parameter, str] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out = _out_channels(m)
            for pname, p in m.named_parameters(recurse=False):
                if pname not in ("weight", "bias") and p.dim() >= 1 and p.shape[0] == out \
                        and p.numel() == out:
                    found[p] = f"{name}.{pname}" if name else pname
    return found


def _data_free(node: Any, memo: dict[Any, bool]) -> bool:
    """True when a traced node computes from parameters alone (a weight standardisation)."""
    from torch_pruning import ops

    if node in memo:
        return memo[node]
    memo[node] = False  # a cycle is data
    if node.type == ops.OPTYPE.PARAMETER:
        result = True
    elif isinstance(node.module, nn.Module) and next(node.module.parameters(False), None) is not None:
        result = False
    else:
        result = all(_data_free(n, memo) for n in node.inputs)
    memo[node] = result
    return result


def _weight_paths(module2node: dict[Any, Any]) -> None:
    """Cut the weight computations that tracing links into a layer's input, in place.

    NF-ResNet's ScaledStdConv2d standardises its weight in the forward; autograd shows that
    computation as an input of the conv, so DepGraph would tie it to the conv's input channels.
    It carries no data: the link goes, and each per-output-channel parameter on the path (the
    gain) is linked to the layer's outputs instead, so it is cut with the filters.
    """
    from torch_pruning import ops

    memo: dict[Any, bool] = {}
    for node in list(module2node.values()):
        if not isinstance(node.module, (nn.Conv2d, nn.Linear)):
            continue
        for inp in [n for n in node.inputs if _data_free(n, memo)]:
            node.inputs.remove(inp)
            inp.outputs.remove(node)
            stack, seen = [inp], set()
            while stack:
                n = stack.pop()
                if n not in seen:
                    seen.add(n)
                    stack.extend(n.inputs)
            for n in seen:  # the path is detached whole: it computes a weight, not features
                n.inputs = [i for i in n.inputs if i not in seen]
                n.outputs = [o for o in n.outputs if o not in seen]
                if n.type == ops.OPTYPE.PARAMETER and n.module.shape[0] == _out_channels(node.module) \
                        and n not in node.outputs:
                    node.add_output(n)
                    n.add_input(node)


LENGTH = "length"  # a slice side: the unit's channels are the length of a Conv1d (ECA)


def _channel_convs(module2node: dict[Any, Any]) -> dict[Any, nn.Module]:
    """Bypass each one-channel Conv1d over the channel axis (ECA's attention), in place.

    ECA views the pooled (B, C) features as (B, 1, C) and convolves along the channels; a
    one-channel Conv1d has no filter to prune and runs on any length, so its node is cut out and
    its input linked to its output: the channels pass through unchanged. Returns the node that
    fed each such conv, with the conv (its FLOPs follow the kept channels).
    """
    fed: dict[Any, nn.Module] = {}
    for node in list(module2node.values()):
        m = node.module
        if not (isinstance(m, nn.Conv1d) and m.in_channels == m.out_channels == 1):
            continue
        for inp in node.inputs:
            inp.outputs.remove(node)
            for out in node.outputs:
                inp.add_output(out)
                out.add_input(inp)
            fed[inp] = m
        for out in node.outputs:
            out.inputs.remove(node)
        node.inputs, node.outputs = [], []
    return fed


def build_graph(model: nn.Module, in_shape: Sequence[int]) -> Any:
    """Trace Torch-Pruning's DependencyGraph of `model` without changing its train/eval mode.

    Large inputs are traced at TRACE_SIZE first (same layers, same coupling, a fraction of the
    time); a model that cannot run at that size is traced at its own shape.
    """
    import torch_pruning as tp

    _install_reshape_guard()
    shape = tuple(int(s) for s in in_shape)
    small = (shape[0], *(min(s, TRACE_SIZE) for s in shape[1:]))
    scales = _scale_parameters(model)
    for trial in dict.fromkeys((small, shape)):
        graph = tp.DependencyGraph()
        graph.evoprune_views = {}
        trace = graph._trace

        def traced(*args: Any, trace: Any = trace, graph: Any = graph, **kwargs: Any) -> Any:
            module2node = trace(*args, **kwargs)
            _weight_paths(module2node)
            graph.evoprune_lengths = _channel_convs(module2node)
            return module2node

        graph._trace = traced
        with preserved_mode(model), torch.enable_grad(), _ViewShapes(graph.evoprune_views):
            try:
                graph.build_dependency(
                    model, example_inputs=example_input(model, trial), verbose=False,
                    unwrapped_parameters=[(p, 0) for p in scales] or None,
                    ignored_params=[])  # Torch-Pruning 1.5 iterates it when a group holds a parameter
            except Exception as exc:
                error = exc
                continue
        graph._param_to_name.update(scales)
        return graph
    raise EvopruneError(f"cannot trace the model at input shape {shape}: "
                        f"{type(error).__name__}: {error}") from None


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _is_grouped(m: nn.Module) -> bool:
    """A grouped conv that is not depthwise (ResNeXt, RegNet): pruned by whole groups."""
    return isinstance(m, nn.Conv2d) and m.groups > 1 and not _is_depthwise(m)


@dataclass
class _Group:
    """One DepGraph group, sorted: the raw material of a unit."""

    channels: int
    roots: list[str]
    producers: list[str] = field(default_factory=list)
    followers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    slices: dict[tuple[str, str], int] = field(default_factory=dict)
    adds: bool = False
    grouped_in: dict[str, bool] = field(default_factory=dict)  # grouped conv -> identity mapping
    grouped_out: list[str] = field(default_factory=list)
    reason: str = ""
    step: int = 1


def _group_layer(graph: Any, names: Mapping[Any, str], dep: Any) -> tuple[str, str, Any] | None:
    """Return (name, side, module) for a parameterised target of a group, else None."""
    target = dep.target.module
    if isinstance(target, nn.Parameter):
        name = getattr(graph, "_param_to_name", {}).get(target)
        return (name, OUT, target) if name else None
    if target not in names or next(target.parameters(False), None) is None:
        return None
    out = graph.is_out_channel_pruning_fn(dep.handler) or _is_depthwise(target)
    return names[target], OUT if out else IN, target


def _unsupported(module: Any) -> str:
    """Why the cost model cannot count a layer a group cuts ('' when it can)."""
    if isinstance(module, (nn.Parameter, nn.Conv2d, nn.Linear)):
        return ""
    if isinstance(module, nn.GroupNorm) and module.num_groups not in (1, module.num_channels):
        return "a GroupNorm needs its channels in multiples of its groups"
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return "a LayerNorm over more than the channel dimension"
    if isinstance(module, NORMS):
        return ""
    return f"its channels reach a {type(module).__name__}, which the cost model does not count"


def _read_group(graph: Any, group: Any, names: Mapping[Any, str], channels: int,
                root: str) -> _Group:
    """Sort a full-index DepGraph group into producers, followers, consumers and slices."""
    import torch_pruning as tp

    g = _Group(channels, [root])
    opaque = graph.__dict__.get("evoprune_opaque", {})
    lengths = graph.__dict__.get("evoprune_lengths", {})
    for item in group.items:
        dep, idxs = item.dep, item.idxs
        node = dep.target
        if node in lengths:  # its channels are the length of a bypassed ECA Conv1d
            conv = names[lengths[node]]
            g.slices[(conv, LENGTH)] = 1
            if len(idxs) != channels:
                g.reason = g.reason or f"its channels map unevenly onto {conv}"
        if node.type == tp.ops.OPTYPE.ELEMENTWISE and node.grad_fn is not None:
            g.adds |= node.grad_fn.name().startswith(("Add", "Sub"))
            if _fixed_weight_conv(node.grad_fn):  # F.conv2d with a buffer as its weight
                g.reason = g.reason or FUNCTIONAL_CONV
        if node in opaque:
            g.reason = opaque[node]
        elif node.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.SLICE):
            g.reason = "its channels pass a split, chunk or slice whose sizes the forward fixes"
        found = _group_layer(graph, names, dep)
        if found is None:
            continue
        name, side, module = found
        g.reason = g.reason or _unsupported(module)
        if len(idxs) % channels:
            g.reason = g.reason or f"its channels map unevenly onto {name}"
        g.slices[(name, side)] = len(idxs) // channels
        if _is_grouped(module):
            if side == OUT:
                g.grouped_out.append(name)
            else:
                g.grouped_in[name] = [int(i) for i in idxs] == [int(i) for i in item.root_idxs] \
                    and len(idxs) == channels == module.in_channels
            continue
        if side == IN:
            target = g.consumers
        elif isinstance(module, (nn.Conv2d, nn.Linear)) and not _is_depthwise(module):
            target = g.producers
        else:
            target = g.followers
        if name not in target:
            target.append(name)
    return g


MAX_VISITS = 64  # one layer met this often in one group: Torch-Pruning is going round in circles
TIME_LIMIT = 300.0  # seconds find_units may take before it stops with one line


class _TooCostly(Exception):
    """A group's expansion that revisits the same layers with ever new index subsets."""


def _describe(node: Any) -> str:
    """A node's short name: a layer's qualified name, or an op such as 'a slice'."""
    name = str(node.name or "")
    if name.startswith("_"):  # an op: _Slice_6(...), _ElementWiseOp_12(AddBackward0)
        kind = name[1:].split("_")[0].removesuffix("Op").lower()
        if kind == "elementwise":
            kind = name.partition("(")[2].rstrip(")").removesuffix("Backward0").lower() or kind
        return f"a {kind}"
    return name.split(" (")[0]


@contextmanager
def bounded_groups(deadline: float) -> Iterator[None]:
    """Stop a group's expansion that cycles or runs past `deadline` (time.monotonic)."""
    import time
    from collections import Counter

    from torch_pruning.dependency import Group

    original = Group.add_dep

    def add_dep(self: Any, dep: Any, idxs: Any) -> None:
        counts = self.__dict__.setdefault("evoprune_visits", Counter())
        counts[dep.target] += 1
        if counts[dep.target] > MAX_VISITS or time.monotonic() > deadline:
            raise _TooCostly(counts, counts[dep.target] <= MAX_VISITS)
        original(self, dep, idxs)

    Group.add_dep = add_dep
    try:
        yield
    finally:
        Group.add_dep = original


def _too_costly(counts: Any, timed_out: bool) -> str:
    """Name what a stopped expansion kept revisiting: the op first (a slice, a split), then a layer."""
    top = [node for node, _ in counts.most_common()]
    ops = [n for n in top if str(n.name or "").startswith("_")]
    layers = [n for n in top if not str(n.name or "").startswith("_")]
    where = " and ".join(_describe(n) for n in (ops[:1] + layers[:1]))
    if timed_out:
        return f"its channels were still being followed through {where}"
    return (f"too costly to follow: Torch-Pruning revisits {where} with ever new channel "
            "subsets (a residual add over part of the channels)")


def _root_group(graph: Any, m: nn.Module) -> tuple[Any, int] | str | None:
    """Return the full-index group rooted at m's outputs (None: no outputs; str: why it fails)."""
    pruner = graph.get_pruner_of_module(m)
    channels = pruner.get_out_channels(m) if pruner is not None else None
    if not channels:
        return None
    try:
        return graph.get_pruning_group(m, pruner.prune_out_channels, list(range(channels))), channels
    except _TooCostly as stop:
        return _too_costly(*stop.args)
    except Exception as exc:  # Torch-Pruning's index mapping fails on this structure
        return f"Torch-Pruning cannot map its channels ({type(exc).__name__})"


def _channel_groups(graph: Any, model: nn.Module, last: nn.Module, deadline: float
                    ) -> tuple[list[_Group], list[tuple[str, str]]]:
    """Return the DepGraph groups rooted at convs and linears, and those Torch-Pruning cannot map."""
    import time

    names = {m: n for n, m in model.named_modules()}
    visited: set[Any] = set()
    groups: list[_Group] = []
    left: list[tuple[str, str]] = []
    for m in list(graph.module2node):
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or m is last or m in visited:
            continue
        with frozen_mappings(), bounded_groups(deadline):
            found = _root_group(graph, m)
        if time.monotonic() > deadline:
            raise EvopruneError(
                f"finding the prunable units took over {TIME_LIMIT:.0f} s (stopped at {names[m]}: "
                f"{found if isinstance(found, str) else 'a very large channel group'}); "
                "raise evoprune.network.units.TIME_LIMIT or prune a smaller model")  # one line
        if isinstance(found, str):
            visited.add(m)
            left.append((names[m], found))
            continue
        if found is None:
            continue
        group, channels = found
        outs = [dep.target.module for dep, _ in group
                if graph.is_out_channel_pruning_fn(dep.handler)]
        visited.update(outs)
        if last in outs:
            continue  # the classifier's outputs are the classes
        groups.append(_read_group(graph, group, names, channels, names[m]))
    return groups, left


def _merge_grouped(groups: list[_Group], modules: Mapping[str, nn.Module]) -> list[_Group]:
    """Join the group feeding each grouped conv with the group it produces (whole-group pruning)."""
    by_in = {name: g for g in groups for name in g.grouped_in}
    by_out = {name: g for g in groups for name in g.grouped_out}
    merged: dict[int, _Group] = {}
    for name in sorted(set(by_in) | set(by_out)):
        conv, g_in, g_out = modules[name], by_in.get(name), by_out.get(name)
        why = ""
        if g_in is None or g_out is None:
            why = f"grouped conv {name} has a fixed input or output: its groups cannot be removed"
        elif conv.in_channels != conv.out_channels:
            why = f"grouped conv {name} has unequal input and output group widths"
        elif g_in is g_out or not g_in.grouped_in[name]:
            why = f"grouped conv {name} takes its input from more than one channel group"
        elif id(g_in) in merged or id(g_out) in merged:
            why = f"grouped conv {name} is chained to another grouped conv"
        for g in (g_in, g_out):
            if g is not None and why:
                g.reason = g.reason or why
        if why:
            continue
        assert g_in is not None and g_out is not None
        join = _Group(g_in.channels, g_in.roots + g_out.roots,
                      g_in.producers + [p for p in g_out.producers if p != name],
                      [*g_in.followers, name, *g_out.followers],
                      [c for c in g_in.consumers if c != name] + g_out.consumers,
                      {**g_in.slices, **g_out.slices}, g_in.adds or g_out.adds,
                      step=conv.in_channels // conv.groups, reason=g_in.reason or g_out.reason)
        merged[id(g_in)] = merged[id(g_out)] = join
    out: list[_Group] = []
    for g in groups:
        if id(g) in merged:
            if merged[id(g)] not in out:
                out.append(merged[id(g)])
        else:
            out.append(g)
    return out


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[Any, Units]] = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple[Any, ...]:
    """What the units depend on: every module's name, class and parameter and buffer shapes."""
    return tuple((name, type(m), tuple((k, tuple(p.shape)) for k, p in m.named_parameters(recurse=False)),
                  tuple((k, tuple(b.shape)) for k, b in m.named_buffers(recurse=False)))
                 for name, m in model.named_modules())


def find_units(model: nn.Module, in_shape: Sequence[int], *, residual: bool = False) -> Units:
    """Find the prunable units of `model` in a stable order (module order of their first producer).

    Found once per model object, input shape and `residual`; a later call on the same,
    unchanged model returns the same `Units` (pruned copies are new objects and found anew).
    """
    shape = tuple(int(s) for s in in_shape)
    key = (shape, bool(residual), _structure(model))
    cached = _CACHE.get(model, {})
    if key in cached:
        return cached[key]
    units = _find_units(model, shape, bool(residual))
    _CACHE.setdefault(model, {})[key] = units
    return units


def _find_units(model: nn.Module, shape: tuple[int, ...], residual: bool) -> Units:
    """Trace the model's DepGraph and turn its channel groups into units (see `find_units`)."""
    import time

    deadline = time.monotonic() + TIME_LIMIT
    modules = dict(model.named_modules())
    index = {n: i for i, n in enumerate(modules)}

    def rank(name: str) -> int:  # a parameter ranks with the module that holds it
        return index.get(name, index.get(name.rpartition(".")[0], len(index)))

    last = output_layer(model, shape)
    graph = build_graph(model, shape)
    groups, left = _channel_groups(graph, model, modules[last], deadline)
    found: list[Unit] = []
    skipped = 0
    for g in _merge_grouped(groups, modules):
        if not g.producers:
            continue
        producers = sorted(g.producers, key=rank)
        kind = RESIDUAL if len(producers) > 1 and g.adds else INTERNAL
        if g.reason:
            left.append((producers[0], g.reason))
            continue
        if kind == RESIDUAL and not residual:
            skipped += 1
            continue
        roots = tuple(sorted(g.roots, key=rank))
        found.append(Unit(producers[0], g.channels, kind, tuple(producers),
                          tuple(sorted(g.followers, key=rank)),
                          tuple(sorted(g.consumers, key=rank)), g.step,
                          roots if roots != (producers[0],) else (),
                          tuple(sorted((n, s, k) for (n, s), k in g.slices.items()))))
    found.sort(key=lambda u: rank(u.name))
    left.sort(key=lambda x: rank(x[0]))
    if not found:
        if skipped:
            raise EvopruneError(f"every prunable channel group of the model is on a residual "
                                f"path ({skipped} stage-width groups): use residual=True "
                                "(`residual`) to prune them")
        why = f" ({left[0][0]}: {left[0][1]})" if left else ""
        raise EvopruneError(f"the model has no prunable channel group{why}"
                            if left else "the model has no prunable channel group "
                            "(is it a single layer?)")
    return Units(tuple(found), shape, residual, last, tuple(left))  # type: ignore[arg-type]


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


def kept_channels(channels: np.ndarray, recipe: np.ndarray,
                  round_to: int | np.ndarray = 1) -> np.ndarray:
    """Return kept channels round(c·(1−r)) (half up), a multiple of `round_to`, at least one.

    `round_to` is one int or one per unit (see `steps`). A unit with ratio 0 keeps all its
    channels whatever `round_to` is (it is not pruned).
    """
    if np.ndim(round_to) == 0 and round_to == 1:
        return np.minimum(np.maximum(np.floor(channels * (1.0 - recipe) + 0.5).astype(np.int64), 1),
                          channels)
    rt = np.asarray(round_to, dtype=np.int64)
    if (rt < 1).any():
        raise EvopruneError(f"round_to must be a positive integer, got {round_to}")
    exact = channels * (1.0 - recipe) / rt
    kept = np.minimum(np.maximum(np.floor(exact + 0.5).astype(np.int64) * rt, rt), channels)
    return np.where(recipe == 0, channels, kept)


def steps(units: Units, round_to: int = 1) -> int | np.ndarray:
    """Per-unit channel step: lcm of a unit's own step (group width) and the space's round_to."""
    own = units.steps
    if (own == 1).all():
        return round_to
    return np.lcm(own, int(round_to))


def round_recipe(units: Units, recipe: Sequence[float] | Mapping[str, float] | np.ndarray,
                 round_to: int = 1) -> np.ndarray:
    """Kept channels of a recipe, each unit rounded to its step: the one rule of every recipe form.

    `uniform:R`, a ratios file, a study's trial and the spaces' genotypes all round here (or
    through `kept_channels` with the same `steps`): round(c·(1−r)) to a multiple of the lcm of
    the unit's group width and `round_to`, at least one step.
    """
    return kept_channels(units.channels, check_recipe(units, recipe), steps(units, round_to))


def check_kept(units: Units, kept: Sequence[int] | np.ndarray, round_to: int = 1) -> np.ndarray:
    """Validate explicit kept channels: one count per unit in [1, channels], a multiple of its step.

    The step is the unit's group width (lcm with `round_to` when given); a unit kept whole passes.
    """
    try:
        k = np.asarray(kept, dtype=np.float64)
    except (TypeError, ValueError):
        k = np.empty(0)
    if k.shape != (len(units),) or not np.isfinite(k).all() or (k != np.round(k)).any():
        raise EvopruneError(f"kept channels must be {len(units)} whole counts, one per unit")
    k = k.astype(np.int64)
    bad = np.flatnonzero((k < 1) | (k > units.channels))
    if bad.size:
        i = int(bad[0])
        raise EvopruneError(f"unit {units.names[i]} keeps {k[i]} channels: keep between 1 and "
                            f"its {units.channels[i]}")
    rt = np.broadcast_to(np.asarray(steps(units, round_to), dtype=np.int64), k.shape)
    off = np.flatnonzero((k % rt != 0) & (k != units.channels))
    if off.size:
        i = int(off[0])
        what = f"whole groups of {rt[i]} channels" if units.steps[i] == rt[i] > 1 else \
            f"channels in steps of {rt[i]}"
        raise EvopruneError(f"unit {units.names[i]} loses {what} (its step): keep a multiple of "
                            f"{rt[i]}, not {k[i]}")
    return k
