"""Continuous solvers: bisections on the relaxed (real-valued channel) cost, many rows at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtri

if TYPE_CHECKING:
    from evoprune.spaces.bands import Bound

BISECT_INNER = 26  # halvings of the common offset: 2^-26 of its range (~1e-8)
BISECT_OUTER = 20  # halvings of the second offset (s or σ): 2^-20 of its range


def relaxed(b: Bound, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relaxed (FLOPs, params) ratios of recipes r (M, N): real-valued kept channels."""
    return b.cost.relaxed(b.c * (1.0 - r))


def bisect(lo: np.ndarray, hi: np.ndarray, raise_lo: Callable[[np.ndarray], np.ndarray],
           steps: int) -> np.ndarray:
    """Halve [lo, hi] per row `steps` times, raising lo where raise_lo(mid); return the midpoints."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        up = raise_lo(mid)
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return 0.5 * (lo + hi)


def solve_offset(b: Bound, base: np.ndarray, target: float, use_params: bool) -> np.ndarray:
    """Common offset t per row so the relaxed FLOPs (or params) ratio of clip(base + t) is target."""
    r_max = b.space.r_max

    def too_much_left(t: np.ndarray) -> np.ndarray:  # above target: prune more, raise t
        f, p = relaxed(b, np.clip(base + t[:, None], 0.0, r_max))
        return (p if use_params else f) > target

    return bisect(-base.max(1), r_max - base.min(1), too_much_left, BISECT_INNER)


def _second(b: Bound, r0: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mCB (else params ratio) of clip(r0 + t + s·d) at the FLOPs target, and those recipes."""
    base = r0 + s[:, None] * b.d
    t = solve_offset(b, base, b.space.c_flops, False)  # type: ignore[arg-type]
    r = np.clip(base + t[:, None], 0.0, b.space.r_max)
    f, p = relaxed(b, r)
    return (f / p if b.space.c_mcb is not None else p), r


def solve_two(b: Bound, r0: np.ndarray) -> np.ndarray:
    """Offsets (t, s) on clip(r0 + t + s·d) for FLOPs and params (or mCB) targets."""
    goal = b.space.c_mcb if b.space.c_mcb is not None else b.space.c_params
    lo, hi = np.full(len(r0), -b.s_max), np.full(len(r0), b.s_max)
    h_lo, r_lo = _second(b, r0, lo)
    h_hi, r_hi = _second(b, r0, hi)
    rising = h_hi >= h_lo
    s = bisect(lo, hi, lambda mid: (_second(b, r0, mid)[0] < goal) == rising, BISECT_OUTER)
    r = _second(b, r0, s)[1]
    # rows whose goal lies outside [h(-S), h(S)] take the nearer end
    below = np.where(rising, goal <= h_lo, goal <= h_hi)
    above = np.where(rising, goal >= h_hi, goal >= h_lo)
    r = np.where(below[:, None], np.where(rising[:, None], r_lo, r_hi), r)
    return np.where(above[:, None], np.where(rising[:, None], r_hi, r_lo), r)


def _std_at(b: Bound, z: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """clip(u + σz) with the common offset u that puts it at the primary band's centre."""
    base = sigma[:, None] * z
    u = solve_offset(b, base, b.target, b.use_params)
    return np.clip(base + u[:, None], 0.0, b.space.r_max)


def solve_std(b: Bound, z: np.ndarray) -> np.ndarray:
    """Offset u and scale σ ≥ c_std so that std(clip(u + σz)) = c_std at the band's centre."""
    goal, r_max = b.space.c_std, b.space.r_max
    r = _std_at(b, z, np.full(len(z), goal))
    short = r.std(1) < goal * (1 - 1e-6)  # clipping ate some spread: widen σ
    if short.any():
        zs = z[short]
        lo, hi = np.full(len(zs), goal), np.full(len(zs), goal * 8.0 + r_max)
        sigma = bisect(lo, hi, lambda mid: _std_at(b, zs, mid).std(1) < goal, BISECT_OUTER)
        r[short] = _std_at(b, zs, sigma)
    return r


def _standardise(z: np.ndarray, flat: float | np.ndarray) -> np.ndarray:
    """Zero mean and unit std per row; `flat` for rows with no spread."""
    z = z - z.mean(1, keepdims=True)
    spread = z.std(1, keepdims=True)
    return np.where(spread > 1e-9, z / np.maximum(spread, 1e-12), flat)


def perturbation(b: Bound, g: np.ndarray, blend: float) -> np.ndarray:
    """STD spaces' z: Φ⁻¹(g) standardised per row, blended toward the neutral z, restandardised."""
    z = _standardise(ndtri(np.clip(g, 1e-6, 1 - 1e-6)), 0.0)
    return _standardise(blend * z + (1 - blend) * b.z_neutral, b.z_neutral)


def continuous(b: Bound, genotypes: np.ndarray, blend: float) -> np.ndarray:
    """Map genotypes (blended toward the neutral point) to relaxed in-band recipes."""
    r_max = b.space.r_max
    g = 0.5 + blend * (genotypes - 0.5)
    if b.space.kind == "std":
        return solve_std(b, perturbation(b, g, blend))
    r0 = r_max * g
    if b.space.kind in ("mcb", "flops+params"):
        return solve_two(b, r0)
    t = solve_offset(b, r0, b.target, b.use_params)
    return np.clip(r0 + t[:, None], 0.0, r_max)
