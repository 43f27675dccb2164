"""The analytic cost model: FLOPs, params and mCB of any recipe without building a model.

One shape pass records a per-layer table; each layer's FLOPs and params are products of its
output and input channel counts, so over the vector x = (kept_1..kept_N, 1) both totals are
quadratic forms, FLOPs = xᵀ·Qf·x and params = xᵀ·Qp·x, evaluated exactly in int64.
FLOPs are counted as `torch.utils.flop_counter.FlopCounterMode` counts them: 2 per multiply-add
of convs and linears (bias, BN and pooling are free); MACs = FLOPs / 2. Params count every
parameter (conv, linear, BN). mCB is Eq. 2 of the paper: (FLOPs/params) over the original's.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from evoprune.errors import EvopruneError
from evoprune.network.units import (
    NORMS,
    Units,
    check_recipe,
    example_input,
    preserved_mode,
    round_recipe,
    steps,
)


class Cost(NamedTuple):
    """Cost of one subnetwork and its ratios to the original (mCB: Eq. 2)."""

    flops: int
    params: int
    flops_ratio: float
    params_ratio: float
    mcb: float

    @property
    def macs(self) -> int:
        """Multiply-accumulates: the unit most pruning papers call FLOPs."""
        return self.flops // 2

    def to_dict(self) -> dict[str, Any]:
        """Return the figures as plain data, MACs included."""
        return {**self._asdict(), "macs": self.macs}


@dataclass(frozen=True)
class LayerCost:
    """One row of the table: a layer's output and input widths as linear forms in x.

    x = (kept_1, …, kept_N, 1); `out[i]` is the layer's output channels per kept channel of
    unit i (the last entry: the fixed channels). `inp` is the inputs each output sees: the input
    channels for a dense conv or linear (a concatenation sums several units; a flatten counts
    each channel's spatial block), the constant group width for depthwise and grouped convs.
    """

    name: str
    kind: str  # conv | grouped | linear | norm | param | length (a Conv1d along the channels)
    out: tuple[int, ...]
    inp: tuple[int, ...]
    kernel: int  # kh · kw
    positions: int  # output positions per image, summed over calls (H·W for a conv)
    bias: bool
    per_channel: int = 0  # norm/param rows: parameters per output channel


def flops_of(model: nn.Module, in_shape: Sequence[int]) -> int:
    """Count one image's FLOPs with torch's FlopCounterMode (the reference counter)."""
    with preserved_mode(model), torch.no_grad():
        model.eval()
        with FlopCounterMode(display=False) as counter:
            model(example_input(model, in_shape))
    return int(counter.get_total_flops())


def params_of(model: nn.Module) -> int:
    """Count every parameter of a model."""
    return sum(p.numel() for p in model.parameters())


class CostModel:
    """Exact FLOPs, params and mCB of recipes on one model's units, from a per-layer table."""

    def __init__(self, model: nn.Module, units: Units) -> None:
        self.units = units
        self.channels = units.channels
        self.plain = bool((units.steps == 1).all())  # no grouped conv: every count is a level
        self.table, measured = _record_table(model, units)
        n = len(units)
        self._qf, self._qp = _quadratic_forms(self.table, n, self.channels)
        full = np.append(self.channels, 1)
        table_flops = int(full @ self._qf @ full)
        if measured != table_flops:  # functional matmuls outside conv/linear modules: a constant
            warnings.warn(f"{measured - table_flops} FLOPs run outside Conv2d/Linear modules; "
                          "they are counted as a constant", stacklevel=2)
            self._qf[n, n] += measured - table_flops
        self._qp[n, n] += _untabled_params(model, {row.name for row in self.table})
        self.base_flops = int(full @ self._qf @ full)
        self.base_params = int(full @ self._qp @ full)
        if self.base_params != params_of(model):
            raise EvopruneError("internal: the cost table misses parameters of the model")
        if self.base_flops >= 2**52:  # float64 sums of integers stay exact below 2^53
            raise EvopruneError("the model is too large for the exact cost model (>= 2^52 FLOPs)")
        # hot path: both forms stacked in float64 (BLAS) on a preallocated x = (kept..., 1)
        self._q = np.concatenate([self._qf, self._qp]).astype(np.float64)
        self._qt = np.ascontiguousarray(self._q.T)
        self._x = np.ones(n + 1, dtype=np.float64)
        self._fchannels = self.channels.astype(np.float64)
        self._density = self.base_flops / self.base_params

    def kept(self, recipe: Sequence[float] | Mapping[str, float], round_to: int = 1) -> np.ndarray:
        """Return the kept channels per unit for a validated recipe."""
        return round_recipe(self.units, recipe, round_to)

    def rounding(self, round_to: int = 1) -> int | np.ndarray:
        """The per-unit channel step of a space's round_to on these units (see `units.steps`)."""
        return steps(self.units, round_to)

    def of_channels(self, kept: Sequence[int] | np.ndarray) -> Cost:
        """Return the cost of the subnetwork keeping `kept[i]` channels of unit i."""
        x = self._x
        x[:-1] = kept
        return self._cost()

    def of_recipe(self, recipe: Sequence[float] | Mapping[str, float], round_to: int = 1) -> Cost:
        """Return the cost of the subnetwork a recipe prunes to (rounding as `kept_channels`)."""
        r = recipe if type(recipe) is np.ndarray else None
        if r is None or round_to != 1 or not self.plain or r.shape != self._fchannels.shape:
            return self.of_channels(self.kept(recipe, round_to))
        kept = self._fchannels * (1.0 - r)  # fast path, same rounding as kept_channels
        if not (r.min() >= 0.0 and kept.min() > 0.0):  # r < 1; NaN fails both
            check_recipe(self.units, r)
        x = self._x[:-1]
        np.floor(kept + 0.5, out=x)
        np.maximum(x, 1.0, out=x)
        return self._cost()

    def _cost(self) -> Cost:
        x = self._x
        flops, params = (self._q @ x).reshape(2, -1) @ x
        flops, params = int(flops), int(params)
        return Cost(flops, params, flops / self.base_flops, params / self.base_params,
                    flops / params / self._density)

    def relaxed(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (FLOPs, params) ratios of real-valued kept channels (M, N): the continuous form."""
        m, n = kept.shape
        x = np.empty((m, n + 1))
        x[:, :n] = kept
        x[:, n] = 1.0
        y = x @ self._qt
        return ((y[:, : n + 1] * x).sum(1) / self.base_flops,
                (y[:, n + 1:] * x).sum(1) / self.base_params)

    def marginals(self) -> tuple[np.ndarray, np.ndarray]:
        """Return each unit's FLOPs and params per channel at full width (the forms' gradients)."""
        x = np.append(self.channels, 1).astype(np.float64)
        qf, qp = self._qf.astype(np.float64), self._qp.astype(np.float64)
        return ((qf + qf.T) @ x)[:-1], ((qp + qp.T) @ x)[:-1]

    def batch(self, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (FLOPs, params) of many kept-channel rows (M, N) at once, int64."""
        x = np.concatenate([np.asarray(kept, dtype=np.int64),
                            np.ones((len(kept), 1), dtype=np.int64)], axis=1)
        return np.einsum("mi,ij,mj->m", x, self._qf, x), np.einsum("mi,ij,mj->m", x, self._qp, x)


def _slices(units: Units) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per layer, features per kept channel of each unit on its output and input side."""
    n = len(units)
    outs: dict[str, np.ndarray] = {}
    ins: dict[str, np.ndarray] = {}
    for i, unit in enumerate(units):
        for name, side, mult in unit.slices or _plain_slices(unit):
            forms = outs if side == "out" else ins
            forms.setdefault(name, np.zeros(n + 1, dtype=np.int64))[i] += mult
    return outs, ins


def _plain_slices(unit: Any) -> list[tuple[str, str, int]]:
    """Slices of a unit built without them (one feature per channel, as before concatenations)."""
    return [(name, "out", 1) for name in unit.producers + unit.followers] + \
        [(name, "in", 1) for name in unit.consumers]


def _form(forms: dict[str, np.ndarray], name: str, total: int, channels: np.ndarray) -> np.ndarray:
    """Complete a layer's linear form with its fixed channels (total minus the units' share)."""
    form = forms.get(name, np.zeros(len(channels) + 1, dtype=np.int64)).copy()
    form[-1] = total - int(form[:-1] @ channels)
    if form[-1] < 0:
        raise EvopruneError(f"internal: the units cut more channels of {name} than it has")
    return form


def _record_table(model: nn.Module, units: Units) -> tuple[list[LayerCost], int]:
    """Run one shape pass: tabulate every conv, linear, norm and cut parameter; count its FLOPs."""
    modules = dict(model.named_modules())
    outs, ins = _slices(units)
    channels = units.channels
    positions: dict[str, int] = {}

    def hook(name: str):
        def record(mod: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if isinstance(mod, nn.Conv1d):  # along the channels: its positions are its length
                positions[name] = positions.get(name, 0) + output.shape[-1]
                return
            width = output.shape[1] if isinstance(mod, nn.Conv2d) else output.shape[-1]
            positions[name] = positions.get(name, 0) + output.numel() // (output.shape[0] * width)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()
               if isinstance(m, (nn.Conv2d, nn.Linear)) or n in ins]
    try:
        with preserved_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()
            model(example_input(model, units.in_shape))
    finally:
        for h in handles:
            h.remove()
    table = [row for name, m in modules.items()
             if (row := _row(name, m, outs, ins, channels, positions)) is not None]
    params = dict(model.named_parameters())
    for name in sorted(set(outs) - set(modules)):  # parameters outside modules (layer scales)
        p = params[name]
        total = int(outs[name][:-1] @ channels)
        size = next((s for s in p.shape if s >= total), total)
        table.append(LayerCost(name, "param", tuple(_form(outs, name, size, channels)), (), 0, 0,
                               False, p.numel() // size))
    return table, int(counter.get_total_flops())


def _row(name: str, m: nn.Module, outs: dict[str, np.ndarray], ins: dict[str, np.ndarray],
         channels: np.ndarray, positions: dict[str, int]) -> LayerCost | None:
    """Return the table row of one module (None for modules without counted parameters)."""
    n1 = len(channels) + 1
    const = np.zeros(n1, dtype=np.int64)
    if isinstance(m, nn.Conv2d):
        out = _form(outs, name, m.out_channels, channels)
        kernel, pos, bias = m.kernel_size[0] * m.kernel_size[1], positions.get(name, 0), m.bias is not None
        if m.groups == 1:
            return LayerCost(name, "conv", tuple(out), tuple(_form(ins, name, m.in_channels, channels)),
                             kernel, pos, bias)
        if name in ins and not np.array_equal(_form(ins, name, m.in_channels, channels), out):
            raise EvopruneError(f"internal: grouped conv {name} would lose inputs but not outputs")
        const[-1] = m.in_channels // m.groups
        return LayerCost(name, "grouped", tuple(out), tuple(const), kernel, pos, bias)
    if isinstance(m, nn.Conv1d) and name in ins:  # ECA: a Conv1d along the units' channels
        length = _form(ins, name, positions.get(name, 0), channels)
        own = sum(p.numel() for p in m.parameters(recurse=False))
        return LayerCost(name, "length", tuple(const), tuple(length), m.kernel_size[0],
                         m.out_channels * (m.in_channels // m.groups), False, own)
    if isinstance(m, nn.Linear):
        return LayerCost(name, "linear", tuple(_form(outs, name, m.out_features, channels)),
                         tuple(_form(ins, name, m.in_features, channels)), 1,
                         positions.get(name, 0), m.bias is not None)
    if isinstance(m, NORMS):
        size = (m.normalized_shape[0] if isinstance(m, nn.LayerNorm) else
                m.num_channels if isinstance(m, nn.GroupNorm) else
                m.num_parameters if isinstance(m, nn.PReLU) else m.num_features)
        own = sum(p.numel() for p in m.parameters(recurse=False))
        if not own or not size:
            return None
        forms = outs if name in outs else ins
        return LayerCost(name, "norm", tuple(_form(forms, name, int(size), channels)), (), 0, 0,
                         False, own // int(size))
    if name in outs or name in ins:
        raise EvopruneError(f"layer {name} ({type(m).__name__}) is cut by a channel group but "
                            "evoprune counts only convs, linears, norms and per-channel parameters")
    return None


def _quadratic_forms(table: list[LayerCost], n: int, channels: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Fill Qf and Qp so that cost = xᵀQx with x = (kept..., 1): products of the rows' forms."""
    qf = np.zeros((n + 1, n + 1), dtype=np.int64)
    qp = np.zeros((n + 1, n + 1), dtype=np.int64)
    for row in table:
        out = np.asarray(row.out, dtype=np.int64)
        if row.kind in ("norm", "param"):
            qp[:, n] += row.per_channel * out
            continue
        if row.kind == "length":  # FLOPs linear in the length (`inp`), params fixed (all of them)
            qf[n, :] += 2 * row.kernel * row.positions * np.asarray(row.inp, dtype=np.int64)
            qp[n, n] += row.per_channel
            continue
        inp = np.asarray(row.inp, dtype=np.int64)
        qf += 2 * row.positions * row.kernel * np.outer(out, inp)
        qp += row.kernel * np.outer(out, inp)
        if row.bias:
            qp[:, n] += out
    return qf, qp


def _untabled_params(model: nn.Module, tabled: set[str]) -> int:
    """Count parameters held by modules the table does not model (they never change)."""
    total = 0
    for name, m in model.named_modules():
        if name not in tabled:
            total += sum(p.numel() for pname, p in m.named_parameters(recurse=False)
                         if f"{name}.{pname}".lstrip(".") not in tabled)
    return total


def latency_ms(model: Any, in_shape: Sequence[int], device: Any, batch: int = 32,
               repeats: int = 5) -> float:
    """Median forward time of one batch in milliseconds (eval mode, no gradients)."""
    import torch

    x = torch.randn(batch, *in_shape, device=device)
    model.eval()
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            tic = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - tic)
    model.train()
    return 1000 * float(np.median(times))
