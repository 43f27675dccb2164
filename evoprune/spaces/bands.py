"""A space bound to a cost model: band targets, the violation, reachability and its refusals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evoprune.cost import CostModel
from evoprune.errors import EvopruneError
from evoprune.spaces.repair import repair
from evoprune.spaces.solvers import continuous, relaxed, solve_offset
from evoprune.spaces.space import PruningSpace
from evoprune.units import kept_channels


@dataclass(frozen=True, eq=False)
class Bound:
    """What every part of the decoder reads: the space, the cost model and per-unit constants."""

    space: PruningSpace
    cost: CostModel
    n: int  # units
    c: np.ndarray  # channels as floats
    kmin: np.ndarray  # kept channels with every unit at r_max (after rounding)
    d: np.ndarray  # standardised log FLOPs-per-param: the second offset's direction
    s_max: float  # the second offset's range is [-s_max, s_max]
    z_neutral: np.ndarray  # the STD perturbation of the neutral genotype (+1, -1, …, standardised)
    target: float  # centre of the primary band: FLOPs, else params
    use_params: bool  # the primary band is params

    def violation(self, kept: np.ndarray, recipes: np.ndarray) -> np.ndarray:
        """Sum of band overshoots, each in units of its half-width (0 = inside every band)."""
        s = self.space
        flops, params = self.cost.batch(kept)
        f, p = flops / self.cost.base_flops, params / self.cost.base_params
        v = np.zeros(len(kept))
        if s.c_flops is not None:
            v += np.maximum(np.abs(f - s.c_flops) - s.delta, 0) / s.delta
        if s.c_params is not None:
            v += np.maximum(np.abs(p - s.c_params) - s.delta, 0) / s.delta
        if s.c_mcb is not None:
            v += np.maximum(np.abs(f / p - s.c_mcb) - s.mcb_tol, 0) / s.mcb_tol
        if s.c_std is not None:
            tol = s.std_tol * s.c_std
            v += np.maximum(np.abs(recipes.std(1) - s.c_std) - tol, 0) / tol
        return v


def primary(space: PruningSpace) -> tuple[float, bool]:
    """Centre of the primary band (FLOPs, else params; an mCB band fixes params) and is-params."""
    if space.c_flops is not None:
        return space.c_flops, False
    return space.c_params, True  # type: ignore[return-value]  # a space has one of the two


def bind(space: PruningSpace, cost: CostModel) -> Bound:
    """Bind a space to a cost model: the per-unit constants the solvers and the repair read."""
    n = len(cost.channels)
    flops_marginal, params_marginal = cost.marginals()
    density = np.log(np.maximum(flops_marginal, 1e-12) / np.maximum(params_marginal, 1e-12))
    spread = density.std()
    z = np.resize([1.0, -1.0], n)
    target, use_params = primary(space)
    return Bound(
        space, cost, n, cost.channels.astype(np.float64),
        kmin=kept_channels(cost.channels, np.full(n, space.r_max), space.round_to),
        d=(density - density.mean()) / spread if spread > 1e-9 else np.zeros(n),
        s_max=8.0 * space.r_max,
        z_neutral=(z - z.mean()) / z.std() if n > 1 else np.zeros(1),
        target=target, use_params=use_params)


def check_reachable(b: Bound) -> None:
    """Refuse a space no recipe reaches, saying what range is reachable."""
    s = b.space
    _check_floor(b)
    reach = reachable_text(b)
    if s.c_mcb is not None or (s.c_params is not None and s.c_flops is not None):
        lo, hi = second_range(b)
        goal, tol = (s.c_mcb, s.mcb_tol) if s.c_mcb is not None else (s.c_params, s.delta)
        if not lo - tol <= goal <= hi + tol:
            raise EvopruneError(f"the {s.label} space {s.bands()} is unreachable: {reach}")
    neutral = np.full((1, b.n), 0.5)
    if not repair(b, continuous(b, neutral, 0.0))[1][0]:
        raise EvopruneError(f"no recipe lies in the {s.label} space {s.bands()}: {reach}")


def _check_floor(b: Bound) -> None:
    """Refuse a FLOPs or params band below what every unit at r_max keeps."""
    s, cost = b.space, b.cost
    floor = cost.of_channels(b.kmin)
    hint = ""
    if not cost.units.residual and any(u.kind == "internal" for u in cost.units):
        hint = ("; block-internal units alone cannot go lower: search the residual-coupled "
                "groups too (--residual)")
    for name, goal, low in (("c_flops", s.c_flops, floor.flops_ratio),
                            ("c_params", s.c_params, floor.params_ratio)):
        if goal is not None and goal + s.delta < low:
            raise EvopruneError(
                f"{name} {goal:g} is unreachable: with every unit at r_max {s.r_max:g} the "
                f"model keeps {low:.4f}; reachable {name} is [{low:.4f}, 1]{hint}")


def reachable_text(b: Bound) -> str:
    """Say what the constrained quantity can reach at this band (for refusals)."""
    s = b.space
    if s.c_std is not None:
        return f"the largest recipe std reachable there is about {max_std(b):.4f}"
    if s.c_mcb is not None or (s.c_params is not None and s.c_flops is not None):
        lo, hi = second_range(b)
        name = "mCB" if s.c_mcb is not None else "c_params"
        return f"at c_flops {s.c_flops:g} the reachable {name} is about [{lo:.3f}, {hi:.3f}]"
    return "the band cannot be met after channel rounding (widen --delta)"


def second_range(b: Bound) -> tuple[float, float]:
    """mCB (or params ratio) at the band's FLOPs with the second offset at its two ends."""
    r0 = np.full((2, b.n), 0.5 * b.space.r_max)
    s = np.array([-b.s_max, b.s_max])
    base = r0 + s[:, None] * b.d
    t = solve_offset(b, base, b.space.c_flops, False)  # type: ignore[arg-type]
    f, p = relaxed(b, np.clip(base + t[:, None], 0.0, b.space.r_max))
    values = f / p if b.space.c_mcb is not None else p
    return float(values.min()), float(values.max())


def max_std(b: Bound) -> float:
    """About the largest recipe std in the primary band: the neutral perturbation at scale 8."""
    base = 8.0 * b.z_neutral[None]
    u = solve_offset(b, base, b.target, b.use_params)
    return float(np.clip(base + u[:, None], 0.0, b.space.r_max).std())
