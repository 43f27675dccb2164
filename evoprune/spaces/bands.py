"""A space bound to a cost model: band targets, the violation, reachability and its refusals."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.units import kept_channels
from evoprune.spaces.reach import Reach, explore
from evoprune.spaces.solvers import (
    TILT_REACH,
    relaxed,
    solve_offset,
    tilt_pair,
    tilted_mean_at,
)
from evoprune.spaces.space import PruningSpace

MEAN_FIELD_STEPS = 8  # damped fixed-point steps of the tilt weights


@dataclass(frozen=True, eq=False)
class Bound:
    """What every part of the decoder reads: the space, the cost model and per-unit constants."""

    space: PruningSpace
    cost: CostModel
    n: int  # units
    c: np.ndarray  # channels as floats
    kmin: np.ndarray  # kept channels with every unit at r_max (after rounding)
    wf: np.ndarray  # FLOPs tilt weights: -d(relaxed FLOPs)/dr at the mean-field recipe, mean 1
    wp: np.ndarray  # params tilt weights, likewise
    tilt_max: float  # a tilt's bracket is [-tilt_max, tilt_max]
    target: float  # centre of the primary band (a range's midpoint): FLOPs, else params
    use_params: bool  # the primary band is params
    lo: float  # the primary target's range [lo, hi] (lo == hi == target without a range)
    hi: float
    rt: np.ndarray  # channel step per unit: lcm of round_to and the unit's group width
    reach: Reach | None = None  # in-band anchors or a proof of emptiness (`reach.explore`)

    @property
    def n_genes(self) -> int:
        """Genes of a genotype: one per unit, and one picking the FLOPs target in a range."""
        return self.n + (self.hi > self.lo)

    def inside(self, f: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Whether exact (FLOPs, params) ratios lie inside every band (broadcasting)."""
        return self.overshoot(f, p) == 0

    def overshoot(self, f: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Sum of band overshoots of (FLOPs, params) ratios, each in units of its half-width."""
        v = self.flops_over(f) + self.params_over(p)
        s = self.space
        if s.c_mcb is not None:
            v = v + np.maximum(np.abs(f / p - s.c_mcb) - s.mcb_tol, 0) / s.mcb_tol
        return v

    def flops_over(self, f: np.ndarray) -> np.ndarray:
        """Overshoot of the FLOPs band (a range's too), in half-widths (0 without the band)."""
        s = self.space
        if s.c_flops is None:
            return np.zeros_like(f, dtype=np.float64)
        hi = s.c_flops_max if s.c_flops_max is not None else s.c_flops
        outside = np.maximum(s.c_flops - f, 0) + np.maximum(f - hi, 0)  # |f - c| without a range
        return np.maximum(outside - s.delta, 0) / s.delta

    def params_over(self, p: np.ndarray) -> np.ndarray:
        """Overshoot of the params band in half-widths (0 without the band)."""
        s = self.space
        if s.c_params is None:
            return np.zeros_like(p, dtype=np.float64)
        return np.maximum(np.abs(p - s.c_params) - s.delta, 0) / s.delta

    def violation(self, kept: np.ndarray, recipes: np.ndarray) -> np.ndarray:
        """Sum of band overshoots of kept channels (M, N), in half-widths (0 = inside every band).

        `recipes` is unused (no band reads the ratios themselves since STD spaces have no std
        band); it stays so that every caller passes the pair it judges.
        """
        flops, params = self.cost.batch(kept)
        return self.overshoot(flops / self.cost.base_flops, params / self.cost.base_params)


def primary(space: PruningSpace) -> tuple[float, bool]:
    """Centre of the primary band (FLOPs, a range's midpoint, else params) and is-params."""
    if space.c_flops is not None:
        hi = space.c_flops_max if space.c_flops_max is not None else space.c_flops
        return 0.5 * (space.c_flops + hi), False
    return space.c_params, True  # type: ignore[return-value]  # a space has one of the two


def bind(space: PruningSpace, cost: CostModel) -> Bound:
    """Bind a space to a cost model: the per-unit constants the solvers and the repair read."""
    n = len(cost.channels)
    target, use_params = primary(space)
    lo = space.c_flops if space.c_flops_max is not None else target
    hi = space.c_flops_max if space.c_flops_max is not None else target
    rt = np.broadcast_to(np.asarray(cost.rounding(space.round_to), dtype=np.int64), (n,)).copy()
    b = Bound(space, cost, n, cost.channels.astype(np.float64),
              kmin=kept_channels(cost.channels, np.full(n, space.r_max), rt),
              wf=np.ones(n), wp=np.ones(n), tilt_max=1.0, target=target, use_params=use_params,
              lo=lo, hi=hi, rt=rt)  # type: ignore[arg-type]
    wf, wp = tilt_weights(b)
    b = replace(b, wf=wf, wp=wp, tilt_max=TILT_REACH / space.r_max / min(wf.min(), wp.min()))
    return replace(b, reach=explore(b))


def tilt_weights(b: Bound) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and params tilt weights (mean 1): -d(relaxed cost)/dr at the mean-field recipe.

    The mean-field recipe is the mean of the tilted law whose tilt is the cost gradient at that
    same recipe (a damped fixed point from the uniform recipe), so units that are cheap to keep
    where the budget lands (block-internal units when the residual widths are pruned hard) get
    small weights, as under the paper's distribution.
    """
    u = solve_offset(b, np.zeros((1, b.n)), b.target, b.use_params)[0]
    r = np.full(b.n, np.clip(u, 0.0, b.space.r_max))
    for _ in range(MEAN_FIELD_STEPS):
        gf, gp = gradients(b, r)
        r = 0.5 * (r + tilted_mean_at(b, _mean_one(gp if b.use_params else gf)))
    gf, gp = gradients(b, r)
    return _mean_one(gf), _mean_one(gp)


def gradients(b: Bound, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-d(relaxed FLOPs ratio, params ratio)/dr_i at recipe r (exact central differences)."""
    h = 0.01  # central differences are exact on the relaxed cost (a quadratic form of r)
    steps = np.concatenate([r + h * np.eye(b.n), r - h * np.eye(b.n)])
    f, p = relaxed(b, steps)
    return (f[b.n:] - f[: b.n]) / (2 * h), (p[b.n:] - p[: b.n]) / (2 * h)


def _mean_one(w: np.ndarray) -> np.ndarray:
    """Weights scaled to mean 1, floored at 1e-3 of it (a unit no band reads still moves)."""
    w = np.maximum(w, 1e-12)
    w = w / w.mean()
    return np.maximum(w, 1e-3)


def check_reachable(b: Bound) -> None:
    """Refuse a space only when no recipe lies in it (proven by `reach.explore`), saying why.

    A space with a witness is accepted; one neither witnessed nor proven empty (the search's
    and the bound's budgets ran out: rare) is accepted with a warning, and sampling tries.
    """
    s = b.space
    _check_floor(b)
    reach = b.reach
    if reach is None or not reach.empty:
        if reach is not None and reach.how == "undecided":
            warnings.warn(f"no recipe was found in the {s.label} space {s.bands()} and none was "
                          f"proven impossible ({reachable_text(b)}); sampling will try",
                          stacklevel=3)
        return
    text = reachable_text(b)
    if s.c_mcb is not None or (s.c_params is not None and s.c_flops is not None):
        lo, hi = second_range(b)
        goal, tol = (s.c_mcb, s.mcb_tol) if s.c_mcb is not None else (s.c_params, s.delta)
        if not lo - tol <= goal <= hi + tol:
            raise EvopruneError(f"the {s.label} space {s.bands()} is unreachable: {text}")
        knob = "`mcb_tol`" if s.c_mcb is not None else "`delta`"
        text += f", but no recipe meets both bands after channel rounding (widen {knob})"
    raise EvopruneError(f"no recipe lies in the {s.label} space {s.bands()}: {text}")


def _check_floor(b: Bound) -> None:
    """Refuse a FLOPs or params band below what every unit at r_max keeps."""
    s, cost = b.space, b.cost
    floor = cost.of_channels(b.kmin)
    hint = ""
    if not cost.units.residual and any(u.kind == "internal" for u in cost.units):
        hint = ("; block-internal units alone cannot go lower: search the residual-coupled "
                "groups too (`residual`)")
    top = s.c_flops_max if s.c_flops_max is not None else s.c_flops
    for name, goal, low in (("c_flops", top, floor.flops_ratio),
                            ("c_params", s.c_params, floor.params_ratio)):
        if goal is not None and goal + s.delta < low:
            raise EvopruneError(
                f"{name} {goal:g} is unreachable: with every unit at r_max {s.r_max:g} the "
                f"model keeps {low:.4f}; reachable {name} is [{low:.4f}, 1]{hint}")


def reachable_text(b: Bound) -> str:
    """Say what the constrained quantity can reach at this band (for refusals)."""
    s = b.space
    if s.c_mcb is not None or (s.c_params is not None and s.c_flops is not None):
        lo, hi = second_range(b)
        name = "mCB" if s.c_mcb is not None else "c_params"
        return f"at c_flops {s.c_flops:g} the reachable {name} is about [{lo:.3f}, {hi:.3f}]"
    near = b.reach.nearest if b.reach is not None else None
    if near is not None:
        name = "params" if b.use_params else "FLOPs"
        ends = " and ".join(f"{v:.6g}" for v in near if v == v)  # NaN: none on that side
        return (f"the nearest reachable {name} ratios are {ends}; the band cannot be met after "
                "channel rounding (widen `delta`)")
    return "the band cannot be met after channel rounding (widen `delta`)"


def second_range(b: Bound) -> tuple[float, float]:
    """mCB (or params ratio) at the band's FLOPs with the params tilt at its two ends."""
    g = np.full((2, b.n), 0.5)
    r = tilt_pair(b, g, np.array([-b.tilt_max, b.tilt_max]))
    f, p = relaxed(b, r)
    values = f / p if b.space.c_mcb is not None else p
    return float(values.min()), float(values.max())
