"""Continuous maps from genotypes to relaxed in-band recipes: bisections on the relaxed cost.

Two maps, both deterministic and vectorised over rows (the exact repair follows):

- STD-x spaces: z = Φ⁻¹(g) and r = clip(u + x·z, 0, r_max) with the common offset u solved into
  the primary band. Uniform genes give z ~ N(0, 1), so the map's image of uniform genotypes is
  the paper's construction: a uniform ratio modified by N small random numbers.
- the other spaces (NSGA-II's map): a *tilt map*. Each ratio is the g-quantile of the uniform
  law on [0, r_max] tilted by exp(a_i·r), a_i = θ·w_i, one θ per row solved into the band. This
  is the large-N law of uniform ratios conditioned on a budget (the tilted law maximises
  entropy under it); the weights w_i are the cost's gradient at the mean of that law (a
  mean-field fixed point, `bands.tilt_weights`), so units that cost much where the budget
  lands (a stage's residual width) prune more and uniform genotypes land near the paper's
  distribution. A ratio reaches r_max only as its gene reaches 1: an extreme budget squeezes
  every unit's quantiles toward r_max smoothly, where a common additive offset clipped many
  units to r_max. mCB and FLOPs+params bands add a params tilt θp·wp_i, solved by an outer
  bisection only for rows whose second ratio falls outside SECOND_MARGIN of its band, so the
  map fills the band rather than pinning its centre.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtri

if TYPE_CHECKING:
    from evoprune.spaces.bands import Bound

BISECT_INNER = 26  # halvings of the common offset: 2^-26 of its range (~1e-8)
BISECT_OUTER = 16  # halvings of the params tilt's log scale
SECOND_MARGIN = 0.8  # the mCB (or params) goal stays within this share of its band's half-width
BISECT_TILT = 28  # halvings of a FLOPs (or params) tilt's log scale
TILT_REACH = 64.0  # |tilt · r_max| the weakest unit reaches at the ends of a tilt's bracket


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


def solve_offset(b: Bound, base: np.ndarray, target: float | np.ndarray,
                 use_params: bool) -> np.ndarray:
    """Common offset t per row so the relaxed FLOPs (or params) ratio of clip(base + t) is target."""
    r_max = b.space.r_max

    def too_much_left(t: np.ndarray) -> np.ndarray:  # above target: prune more, raise t
        f, p = relaxed(b, np.clip(base + t[:, None], 0.0, r_max))
        return (p if use_params else f) > target

    return bisect(-base.max(1), r_max - base.min(1), too_much_left, BISECT_INNER)


def tilted(g: np.ndarray, a: np.ndarray, r_max: float) -> np.ndarray:
    """The g-quantile of the law on [0, r_max] with density ∝ exp(a·r) (a = 0: uniform)."""
    s = np.where(a > 0, 1.0 - g, g)  # a > 0 mirrors a < 0: r_max - r has density ∝ exp(-a·r)
    b = -np.abs(a) * r_max
    flat = b > -1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log1p(s * np.expm1(b)) / np.where(flat, -1.0, b) * r_max
    x = np.where(flat, s * r_max, np.nan_to_num(x, nan=r_max, posinf=r_max))
    return np.clip(np.where(a > 0, r_max - x, x), 0.0, r_max)


def bisect_tilt(reach: np.ndarray, raise_lo: Callable[[np.ndarray], np.ndarray],
                steps: int) -> np.ndarray:
    """Bisect a tilt θ per row in [-reach, reach] on a log scale, θ = ±(e^|y| - 1).

    Tilts span orders of magnitude (a mild budget wants |θ| ~ 1, an extreme one ~ 100s), so
    halving y gives every θ the same relative precision for few steps.
    """
    top = np.log1p(reach)

    def theta(y: np.ndarray) -> np.ndarray:
        return np.sign(y) * np.expm1(np.abs(y))

    return theta(bisect(-top, top, lambda y: raise_lo(theta(y)), steps))


def tilted_mean(a: np.ndarray, r_max: float) -> np.ndarray:
    """Mean of the law on [0, r_max] with density ∝ exp(a·r)."""
    x = np.asarray(a, dtype=np.float64) * r_max
    small = np.abs(x) < 1e-6
    xs = np.where(small, 1.0, x)
    with np.errstate(over="ignore"):
        m = 1.0 / -np.expm1(-xs) - 1.0 / xs
    return r_max * np.where(small, 0.5 + x / 12.0, m)


def tilted_mean_at(b: Bound, w: np.ndarray) -> np.ndarray:
    """The tilted-mean recipe with tilts θ·w, θ putting its relaxed primary ratio at the target."""
    def too_much_left(theta: np.ndarray) -> np.ndarray:
        f, p = relaxed(b, tilted_mean(theta[:, None] * w, b.space.r_max))
        return (p if b.use_params else f) > b.target

    reach = np.full(1, TILT_REACH / b.space.r_max / w.min())
    theta = bisect_tilt(reach, too_much_left, BISECT_TILT)
    return tilted_mean(theta[:, None] * w, b.space.r_max)[0]


def tilt_one(b: Bound, g: np.ndarray, target: float | np.ndarray) -> np.ndarray:
    """Recipes tilted(g, θ·w) with θ per row putting the relaxed primary ratio at target."""
    w, r_max = (b.wp if b.use_params else b.wf), b.space.r_max

    def too_much_left(theta: np.ndarray) -> np.ndarray:  # above target: tilt toward r_max
        f, p = relaxed(b, tilted(g, theta[:, None] * w, r_max))
        return (p if b.use_params else f) > target

    theta = bisect_tilt(np.full(len(g), b.tilt_max), too_much_left, BISECT_TILT)
    return tilted(g, theta[:, None] * w, r_max)


def tilt_pair(b: Bound, g: np.ndarray, theta_p: np.ndarray) -> np.ndarray:
    """Recipes tilted(g, θf·wf + θp·wp) with θf per row putting the relaxed FLOPs at c_flops."""
    r_max, goal = b.space.r_max, b.space.c_flops
    push = theta_p[:, None] * b.wp

    def too_much_left(theta: np.ndarray) -> np.ndarray:
        f, _ = relaxed(b, tilted(g, theta[:, None] * b.wf + push, r_max))
        return f > goal

    reach = b.tilt_max + np.abs(theta_p) * (b.wp / b.wf).max()  # θf outweighs any θp·wp
    theta = bisect_tilt(reach, too_much_left, BISECT_TILT)
    return tilted(g, theta[:, None] * b.wf + push, r_max)


def _second(b: Bound, g: np.ndarray, theta_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mCB (else params ratio) of the pair-tilted recipes at the FLOPs target, and the recipes."""
    r = tilt_pair(b, g, theta_p)
    f, p = relaxed(b, r)
    return (f / p if b.space.c_mcb is not None else p), r


def solve_pair(b: Bound, g: np.ndarray) -> np.ndarray:
    """Tilts (θf, θp) per row: FLOPs at c_flops, and the mCB (or params) ratio in its band.

    A row whose params tilt 0 already lands within SECOND_MARGIN of the band keeps it (as
    the initial space restricted to the band would); the others move to that margin's nearer
    edge, so the map fills the band instead of pinning its centre.
    """
    s = b.space
    centre, tol = (s.c_mcb, s.mcb_tol) if s.c_mcb is not None else (s.c_params, s.delta)
    reach = np.full(len(g), b.tilt_max)
    h_lo, r_lo = _second(b, g, -reach)
    h_hi, r_hi = _second(b, g, reach)
    h0, r0 = _second(b, g, np.zeros(len(g)))
    goal = np.clip(h0, centre - SECOND_MARGIN * tol, centre + SECOND_MARGIN * tol)
    rising = h_hi >= h_lo
    theta_p = bisect_tilt(reach, lambda mid: (_second(b, g, mid)[0] < goal) == rising, BISECT_OUTER)
    r = _second(b, g, theta_p)[1]
    # rows whose goal lies outside [h(-T), h(T)] take the nearer end
    below = np.where(rising, goal <= h_lo, goal <= h_hi)
    above = np.where(rising, goal >= h_hi, goal >= h_lo)
    r = np.where(below[:, None], np.where(rising[:, None], r_lo, r_hi), r)
    r = np.where(above[:, None], np.where(rising[:, None], r_hi, r_lo), r)
    return np.where((goal == h0)[:, None], r0, r)


def std_map(b: Bound, g: np.ndarray, target: float | np.ndarray) -> np.ndarray:
    """STD-x: clip(u + x·Φ⁻¹(g)) with the common offset u putting the primary ratio at target."""
    base = b.space.c_std * ndtri(np.clip(g, 1e-9, 1 - 1e-9))
    u = solve_offset(b, base, target, b.use_params)
    return np.clip(base + u[:, None], 0.0, b.space.r_max)


def targets(b: Bound, g: np.ndarray) -> float | np.ndarray:
    """The primary target per row: the last gene's pick in a range, else the band's centre."""
    return b.lo + g[:, b.n] * (b.hi - b.lo) if b.n_genes > b.n else b.target


def continuous(b: Bound, genotypes: np.ndarray, blend: float) -> np.ndarray:
    """Map genotypes (M, n_genes), blended toward the neutral 0.5, to relaxed in-band recipes."""
    g = 0.5 + blend * (genotypes - 0.5)
    units, target = g[:, : b.n], targets(b, g)
    if b.space.kind == "std":
        return std_map(b, units, target)
    if b.space.kind in ("mcb", "flops+params"):
        return solve_pair(b, units)
    return tilt_one(b, units, target)
