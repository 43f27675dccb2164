"""I.i.d. draws from the paper's initial space restricted to the bands: rejection, else Gibbs.

The target is the law of ratios uniform on [0, r_max]^N conditioned on every band holding
after channel rounding (exactly the bands `Bound.violation` checks). Rounding maps each unit's
ratio to a kept count k_i, so the target factorises: k has mass ∝ Π_i len_i(k_i) on the
in-band k (len_i(k) is the length of the ratio interval that keeps k channels), and each r_i
is uniform on its interval given k_i.

- `reject`: uniform ratios, a batch at a time, kept when inside every band (exact).
- `gibbs`: a pair-wise Gibbs sampler on k. A step picks two units (i, j) and redraws (k_i, k_j)
  from the target given the other units: every pair of levels in a window (the whole range of
  both units when it has at most `WINDOW` levels) is scored on the exact integer cost (FLOPs and
  params are quadratic in (k_i, k_j) given the rest), weighted len_i·len_j where every band
  holds. Pairs trade budget between units, so chains move along the thin band where a single
  unit given all others could only shuffle a channel or two. A window over a wide unit is a
  random lattice (random stride, random position of the current level in it): the lattice is
  chosen with the same probability from each of its points, so the step keeps the target.
  Many chains run vectorised from in-band starts; each gives one draw after `SWEEPS` sweeps.
- `draw`: rejection when a pilot batch says it is cheap, Gibbs for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from evoprune.units import kept_channels

if TYPE_CHECKING:
    from evoprune.spaces.bands import Bound

WINDOW = 64  # levels of one unit scored in one pair step
SWEEPS = 24  # sweeps (each unit in one pair step) before a chain's draw
PILOT = 4096  # uniform draws judged before choosing rejection or Gibbs
PARTNERS = False
CHUNK = 4096  # chains run at once (memory bound)
REJECT_PER_CELL = 1.0  # rejection draw costs about (N+1)² / REJECT_PER_CELL Gibbs cells


@dataclass(frozen=True)
class Levels:
    """Each unit's reachable kept counts and the ratio interval keeping each, padded to (N, L)."""

    kept: np.ndarray  # (N, L) int64, ascending per unit (padding repeats the last)
    lo: np.ndarray  # (N, L) lower end of the ratio interval keeping that count
    length: np.ndarray  # (N, L) its length (0 for padding and for r = 0 only counts)
    count: np.ndarray  # (N,) levels per unit


def unit_levels(c: int, round_to: int, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept counts one unit reaches for r in [0, r_max], each with its ratio interval (lo, len)."""
    m = np.arange(int(np.floor(c * (1 - r_max) / round_to + 0.5)), int(np.floor(c / round_to + 0.5)) + 1)
    lo = np.maximum(1 - (m + 0.5) * round_to / c, 0.0)
    hi = np.minimum(1 - (m - 0.5) * round_to / c, r_max)
    k = np.clip(m * round_to, round_to, c)
    kept = np.union1d(k, [c])  # r = 0 keeps every channel whatever round_to is
    length = np.array([np.maximum(hi - lo, 0)[k == v].sum() for v in kept])
    low = np.array([lo[k == v].min() if (k == v).any() else 0.0 for v in kept])
    return kept.astype(np.int64), low, length


def levels(b: Bound) -> Levels:
    """Stack every unit's levels (see `unit_levels`), padded to the widest unit."""
    rows = [unit_levels(int(c), b.space.round_to, b.space.r_max) for c in b.cost.channels]
    width = max(len(r[0]) for r in rows)

    def pad(v: np.ndarray, fill: float) -> np.ndarray:
        return np.concatenate([v, np.full(width - len(v), fill, dtype=v.dtype)])

    return Levels(np.stack([pad(k, k[-1]) for k, _, _ in rows]),
                  np.stack([pad(lo, 0.0) for _, lo, _ in rows]),
                  np.stack([pad(ln, 0.0) for _, _, ln in rows]),
                  np.array([len(k) for k, _, _ in rows]))


def quadratic_form(b: Bound, flops: bool) -> np.ndarray:
    """Symmetric integer S (N+1, N+1) with cost(k) = ½·xᵀSx, x = (k, 1), read off `cost.batch`.

    Polarisation on the exact cost: evaluations at 0, e_i, 2e_i and e_i + e_j (int64, exact).
    """
    n = b.n
    eye = np.eye(n, dtype=np.int64)
    rows = np.concatenate([np.zeros((1, n), np.int64), eye, 2 * eye,
                           (eye[:, None, :] + eye[None, :, :]).reshape(n * n, n)])
    value = b.cost.batch(rows)[0 if flops else 1]
    zero, one, two = value[0], value[1: n + 1], value[n + 1: 2 * n + 1]
    pair = value[2 * n + 1:].reshape(n, n)
    s = np.empty((n + 1, n + 1), dtype=np.int64)
    s[:n, :n] = pair - one[:, None] - one[None, :] + zero  # S_ij for i != j
    s[np.arange(n), np.arange(n)] = two - 2 * one + zero  # S_ii = 2·Q_ii
    s[:n, n] = s[n, :n] = one - (two - 2 * one + zero) // 2 - zero  # Q_in + Q_ni
    s[n, n] = 2 * zero
    return s


def reject(b: Bound, n: int, rng: np.random.Generator, max_draws: int, batch: int
           ) -> tuple[np.ndarray, int]:
    """Uniform ratios `batch` at a time, kept when inside every band: (accepted[:n], draws)."""
    accepted: list[np.ndarray] = []
    got = draws = 0
    while got < n and draws < max_draws:
        r = rng.uniform(0.0, b.space.r_max, (batch, b.n))
        draws += batch
        kept = kept_channels(b.cost.channels, r, b.space.round_to)
        accepted.append(r[b.violation(kept, r) == 0])
        got += len(accepted[-1])
    recipes = np.concatenate(accepted)[:n] if accepted else np.empty((0, b.n))
    return recipes, draws


def int_band(over: Callable[[np.ndarray], np.ndarray], base: int, centre: float) -> tuple[int, int]:
    """The integer costs [lo, hi] whose ratio cost/base has overshoot 0 (the band, exactly)."""
    def first(pred: Callable[[int], bool]) -> int:  # first integer in [0, 2·base] where pred holds
        lo, hi = 0, 2 * base + 1
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if pred(mid) else (mid + 1, hi)
        return lo

    def out(v: int) -> bool:
        return bool(over(np.array([v / base]))[0] > 0)

    return first(lambda v: not out(v) or v / base > centre), \
        first(lambda v: out(v) and v / base > centre) - 1


def monotone_bands(b: Bound) -> list[tuple[int, int, int]]:
    """(form, lo, hi) of the FLOPs and params bands as integer cost ranges (0 FLOPs, 1 params)."""
    s, cost, out = b.space, b.cost, []
    if s.c_flops is not None:
        top = s.c_flops_max if s.c_flops_max is not None else s.c_flops
        out.append((0, *int_band(b.flops_over, cost.base_flops, 0.5 * (s.c_flops + top))))
    if s.c_params is not None:
        out.append((1, *int_band(b.params_over, cost.base_params, s.c_params)))
    return out


class _Chains:
    """The state of many Gibbs chains: level indices, kept counts, gradients and costs."""

    def __init__(self, b: Bound, lv: Levels, forms: tuple[np.ndarray, np.ndarray],
                 starts: np.ndarray) -> None:
        kept = kept_channels(b.cost.channels, starts, b.space.round_to)
        self.b, self.lv, self.forms = b, lv, forms
        self.bands = monotone_bands(b)
        self.idx = np.stack([np.searchsorted(lv.kept[i, : lv.count[i]], kept[:, i])
                             for i in range(b.n)], axis=1)
        self.x = np.concatenate([kept, np.ones((len(kept), 1), np.int64)], axis=1)
        self.grad = [self.x @ s for s in forms]  # S·x per chain (S symmetric)
        self.cost = [(g * self.x).sum(1) // 2 for g in self.grad]

    def window(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Candidate level indices (M, W) of unit i, ascending, and their weights (0 outside)."""
        count, m = int(self.lv.count[i]), len(self.x)
        if count <= WINDOW:
            cand = np.broadcast_to(np.arange(count), (m, count))
            return cand, self.lv.length[i, cand]
        stride = int(rng.integers(1, -(-count // WINDOW) + 1))
        offset = rng.integers(0, WINDOW, m)
        cand = self.idx[:, i, None] + (np.arange(WINDOW) - offset[:, None]) * stride
        valid = (cand >= 0) & (cand < count)
        cand = np.clip(cand, 0, count - 1)
        return cand, self.lv.length[i, cand] * valid

    def coefficients(self, i: int, j: int) -> list[tuple[np.ndarray, np.ndarray, int, int, int]]:
        """Per form: cost(a, c) = part(a) + h·c + d·c² + e·a·c with units i, j keeping a and c.

        Returned as (rest, h_i, d_i, h_j, d_j, e) folded into (rest, hi, hj) arrays and ints.
        """
        xi, xj = self.x[:, i], self.x[:, j]
        out = []
        for s, g, total in zip(self.forms, self.grad, self.cost, strict=True):
            di, dj, e = int(s[i, i] // 2), int(s[j, j] // 2), int(s[i, j])
            hi = g[:, i] - s[i, i] * xi - e * xj
            hj = g[:, j] - s[j, j] * xj - e * xi
            rest = total - (hi * xi + hj * xj + di * xi * xi + dj * xj * xj + e * xi * xj)
            out.append((rest, hi, hj, di, dj, e))
        return out

    def step(self, i: int, j: int, rng: np.random.Generator) -> None:
        """Redraw units i and j of every chain from the target given the other units."""
        lv, cost = self.lv, self.b.cost
        ci, wi = self.window(i, rng)
        cj, wj = self.window(j, rng)
        a, c = lv.kept[i, ci], lv.kept[j, cj]
        part = [(rest[:, None] + hi[:, None] * a + di * a * a, hj, dj, e * a)
                for rest, hi, hj, di, dj, e in self.coefficients(i, j)]
        first, stop = self._interval(part, c)
        # the cells: every (chain, a, column) in its run, flat and grouped by chain
        span = (stop - first).ravel()
        if not span.any():
            return
        owner = np.repeat(np.arange(span.size), span)  # flat (chain, a) of each cell
        col = first.ravel()[owner] + np.arange(owner.size) - np.repeat(np.cumsum(span) - span, span)
        chain, row = np.divmod(owner, a.shape[1])
        cc = c[chain, col]
        flops, params = (p[chain, row] + (hj[chain] + ea[chain, row]) * cc + dj * cc * cc
                         for p, hj, dj, ea in part)
        ok = self.b.inside(flops / cost.base_flops, params / cost.base_params)
        cum = np.cumsum(wi[chain, row] * wj[chain, col] * ok)
        ends = np.searchsorted(chain, np.arange(len(a)), side="right")  # each chain's last cell + 1
        before = np.where(ends > 0, cum[np.maximum(ends, 1) - 1], 0.0)
        before = np.concatenate([[0.0], before[:-1]])
        total = (cum[np.maximum(ends, 1) - 1] if len(cum) else np.zeros(len(a))) - before
        u = before + rng.random(len(a)) * total
        moved = np.flatnonzero(total > 0)  # a chain with no weighted cell stays
        pick = np.minimum(np.searchsorted(cum, u[moved], side="right"), ends[moved] - 1)
        self._move(moved, i, ci[moved, row[pick]], a[moved, row[pick]])
        self._move(moved, j, cj[moved, col[pick]], c[moved, col[pick]])

    def _interval(self, part: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]], c: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Per (chain, a): the window columns [first, stop) inside every monotone band.

        Each cost rises with c (every coefficient is non-negative), so a band is one run of
        columns, found by bisection; the exact check of every band follows on that run.
        """
        m, wi = part[0][0].shape
        first, stop = np.zeros((m, wi), np.int64), np.full((m, wi), c.shape[1], np.int64)
        rows = np.arange(m)[:, None]
        for form, lo, hi in self.bands:
            p, hj, dj, ea = part[form]

            def count_below(bound: int) -> np.ndarray:  # columns whose cost is below bound
                left, right = np.zeros((m, wi), np.int64), np.full((m, wi), c.shape[1], np.int64)
                while (left < right).any():
                    mid = (left + right) // 2
                    cm = c[rows, np.minimum(mid, c.shape[1] - 1)]
                    below = (p + (hj[:, None] + ea) * cm + dj * cm * cm < bound) & (left < right)
                    left = np.where(below, mid + 1, left)
                    right = np.where(below | (left >= right), right, mid)
                return left

            first = np.maximum(first, count_below(lo))
            stop = np.minimum(stop, count_below(hi + 1))
        return first, np.maximum(stop, first)

    def _move(self, rows: np.ndarray, i: int, idx: np.ndarray, kept: np.ndarray) -> None:
        """Set unit i of chains `rows` to level idx (keeping `kept`), updating gradient and cost."""
        step = kept - self.x[rows, i]
        for s, g, total in zip(self.forms, self.grad, self.cost, strict=True):
            total[rows] += step * g[rows, i] + (s[i, i] // 2) * step * step
            g[rows] += step[:, None] * s[i][None, :]
        self.idx[rows, i] = idx
        self.x[rows, i] = kept

    def ratios(self, rng: np.random.Generator) -> np.ndarray:
        """Ratios uniform in each chain's level intervals (the target given the kept counts)."""
        units = np.arange(self.b.n)
        lo, length = self.lv.lo[units, self.idx], self.lv.length[units, self.idx]
        r = lo + rng.random(self.idx.shape) * length
        kept = self.x[:, :-1]
        bad = kept_channels(self.b.cost.channels, r, self.b.space.round_to) != kept
        return np.where(bad, np.where(kept == self.b.cost.channels, 0.0, lo + 0.5 * length), r)


def gibbs(b: Bound, starts: np.ndarray, seed: int, sweeps: int = SWEEPS) -> np.ndarray:
    """One draw per chain, chains started at in-band recipes `starts` (M, N); deterministic."""
    lv = levels(b)
    forms = (quadratic_form(b, True), quadratic_form(b, False))
    chunks = range(0, len(starts), CHUNK)
    seeds = np.random.SeedSequence(seed).spawn(len(chunks))
    out = [_run(b, lv, forms, starts[k: k + CHUNK], np.random.default_rng(s), sweeps)
           for k, s in zip(chunks, seeds, strict=True)]
    return np.concatenate(out) if out else np.empty((0, b.n))


def _run(b: Bound, lv: Levels, forms: tuple[np.ndarray, np.ndarray], starts: np.ndarray,
         rng: np.random.Generator, sweeps: int) -> np.ndarray:
    """Run one vectorised batch of chains for `sweeps` sweeps of random disjoint pairs."""
    chains = _Chains(b, lv, forms, starts)
    for _ in range(sweeps):
        if PARTNERS:
            order = np.stack([np.arange(b.n), (np.arange(b.n) + rng.integers(1, b.n, b.n)) % b.n], 1)
            order = order[rng.permutation(b.n)].ravel()
        else:
            order = rng.permutation(b.n)
            if b.n % 2:
                order = np.append(order, rng.choice(order[:-1]))
        for i, j in order.reshape(-1, 2):
            chains.step(int(i), int(j), rng)
    return chains.ratios(rng)


def reject_budget(b: Bound) -> float:
    """Rejection draws that cost about as much as one Gibbs draw (per draw still needed)."""
    width = min(int(levels_width(b)), WINDOW)
    return SWEEPS * (b.n / 2) * width * width * REJECT_PER_CELL / (b.n + 1) ** 2


def levels_width(b: Bound) -> int:
    """The most levels of one unit (channels over round_to, about)."""
    return int((b.cost.channels // b.space.round_to).max()) + 2


def draw(b: Bound, n: int, seed: int, starts: Callable[[np.random.Generator, int], np.ndarray]
         ) -> np.ndarray:
    """n i.i.d. draws of the target: rejection if a pilot batch says it is cheap, else Gibbs.

    `starts(rng, m)` returns m in-band recipes the Gibbs chains start from.
    """
    rng = np.random.default_rng(seed)
    got, draws = reject(b, n, rng, PILOT, PILOT)
    need = n - len(got)
    if need and len(got) and need * draws / len(got) <= need * reject_budget(b):
        more, _ = reject(b, need, rng, int(2 * need * draws / len(got)) + PILOT, PILOT)
        got, need = np.concatenate([got, more]), need - len(more)
    if need:
        got = np.concatenate([got, gibbs(b, starts(rng, need), int(rng.integers(2**63)))])
    return got
