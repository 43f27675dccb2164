"""I.i.d. draws from the paper's initial space restricted to the bands: blocks, rejection, Gibbs.

The target is the law of ratios uniform on [0, r_max]^N conditioned on every band holding
after channel rounding (exactly the bands `Bound.violation` checks). Rounding maps each unit's
ratio to a kept count k_i (a *level*), so the target factorises: k has mass ∝ Π_i len_i(k_i)
on the in-band k (len_i(k) is the length of the ratio interval keeping k channels), and each
r_i is uniform on its interval given k_i.

- `reject`: uniform ratios, a batch at a time, kept when inside every band (exact).
- `BlockSampler`: exact rejection from a tilted proposal. Units that share no cost term
  (block-internal units: a bottleneck's two convs, a basic block's first) split the cost into
  a constant plus one integer term per block, so the proposal ∝ Π len · exp(θ·(f, p)) is a
  product over blocks, each block's level combinations tabulated once and drawn by inverse
  CDF. Residual units join a stage through its residual width: `split` makes such units
  *hubs*, drawn first from their exact marginal under the proposal (their combinations
  enumerated), the blocks then given the hubs. θ moves the proposal's mean cost onto the
  bands; an in-band proposal is kept with probability exp(-θ·(f, p) - M), M that exponent's
  largest value over the bands, which undoes the tilt exactly (on a thin band it is close to
  1). I.i.d. and exact; where hubs have too many combinations (ResNet-50's residual widths)
  or proposals rarely land in the bands, Gibbs.
- `Sampler.gibbs`: a Gibbs sampler, many chains vectorised, each started at an in-band recipe
  and giving one draw after `SWEEPS` sweeps (independent draws). A sweep has two kinds of
  steps, each drawing exactly from the target restricted to a set of states that is the same
  from each of its points (so each keeps the target):
  * pair steps: two units (i, j) redraw their levels given the others. FLOPs and params are
    quadratic in (k_i, k_j), every cost rises with each k, so for each k_i the in-band k_j
    are one run of levels (found from the quadratic's root, then checked on the exact
    integer cost); the pair is drawn ∝ len_i·len_j over those cells. Pairs trade budget
    where one unit given all others could only shuffle a channel or two.
  * flow steps: unit i's logit log(r/(r_max - r)) moves by +t and those of the other units of
    its width (a ResNet stage) by -t, t on a lattice window around 0, drawn with a unit j of
    another width that lands the cost in the band; t is weighted by the flow's Jacobian (a
    group move). A stage's residual width against its block-internal units is the slow
    direction of pair steps (halving a residual width must double its stage's other widths).
  Windows over wide units are random lattices placed uniformly around the current point.
- `Sampler.draw`: the block sampler where it applies; else (`method="gibbs"`, the path
  before it) rejection when a pilot batch says it is cheap, Gibbs for the rest.

Checked against exact enumeration on small problems and against rejection (two-sample KS
on every unit's ratio, recipe std, mCB) in tests/test_space_sampling.py and
scripts/space_match.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from evoprune.errors import EvopruneError
from evoprune.network.units import kept_channels

if TYPE_CHECKING:
    from evoprune.spaces.bands import Bound

WINDOW = 64  # levels of one unit scored in one step (more: a random lattice of them)
SWEEPS = 6  # sweeps before a chain's draw (chains from a uniform recipe mix in about 4)
SHIFTS = 15  # flows t of one flow step
FLOW_STEP = 0.2  # the flows' lattice step (logit units)
CHUNK = 4096  # chains run at once (memory bound)
PILOT = 4096  # uniform draws judged before choosing rejection or Gibbs
REJECT_PER_DRAW = 2000  # rejection draws that cost about as much as one Gibbs draw ...
REJECT_FLOOR = 30_000  # ... and as much as a Gibbs run's fixed cost (sample(1))
BLOCK_CELLS = 1 << 20  # most cells (combinations, over all rows) one block may tabulate
HUB_COMBOS = 1 << 16  # most level combinations of the hubs
BLOCK_MERGE = 4096  # small blocks are joined up to this many combinations
GUIDE = 8  # guide-table buckets per cell of a block ...
GUIDE_MAX = 1 << 18  # ... at most this many
BLOCK_PILOT = 16_384  # proposals judging each tilt (the best one is kept)
BLOCK_BATCH = 65_536  # most proposals at once
BLOCK_MIN_BATCH = 256  # fewest proposals at once
BLOCK_MIN_RATE = 2e-5  # kept per proposal and block drawn: below, Gibbs is faster
TILT_STEPS = 40  # Newton steps solving the tilt
TILT_CELLS = 4096  # cells per block the tilt's solve reads (a regular subset)
TILT_MAX = 1e5  # |θ| bound (a band beyond the reachable range stops the solve there)
METHODS = ("auto", "blocks", "gibbs")  # Sampler.draw: blocks where they apply, else gibbs


Flow = tuple[np.ndarray, np.ndarray, list[np.ndarray]]  # units, ±1 signs, their form blocks


@dataclass(frozen=True)
class Levels:
    """Each unit's reachable kept counts and the ratio interval keeping each, padded to (N, L)."""

    kept: np.ndarray  # (N, L) int64, ascending per unit (padding repeats the last)
    lo: np.ndarray  # (N, L) lower end of the ratio interval keeping that count
    length: np.ndarray  # (N, L) its length (0 for padding and for r = 0 only counts)
    count: np.ndarray  # (N,) levels per unit
    index: np.ndarray  # (N, max channels + 1): the level of each kept count (0 where unreachable)


def unit_levels(c: int, round_to: int, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept counts one unit reaches for r in [0, r_max], each with its ratio interval (lo, len)."""
    first, last = (int(np.floor(c * (1 - r) / round_to + 0.5)) for r in (r_max, 0.0))
    m = np.arange(first, last + 1)  # multiples of round_to, as `kept_channels` rounds
    lo = np.maximum(1 - (m + 0.5) * round_to / c, 0.0)
    hi = np.minimum(1 - (m - 0.5) * round_to / c, r_max)
    k = np.clip(m * round_to, round_to, c)
    kept = np.union1d(k, [c])  # r = 0 keeps every channel whatever round_to is
    length = np.array([np.maximum(hi - lo, 0)[k == v].sum() for v in kept])
    low = np.array([lo[k == v].min() if (k == v).any() else 0.0 for v in kept])
    return kept.astype(np.int64), low, length


def levels(b: Bound) -> Levels:
    """Stack every unit's levels (see `unit_levels`), padded to the widest unit."""
    rows = [unit_levels(int(c), int(rt), b.space.r_max) for c, rt in zip(b.cost.channels, b.rt)]
    width = max(len(r[0]) for r in rows)

    def pad(v: np.ndarray, fill: float) -> np.ndarray:
        return np.concatenate([v, np.full(width - len(v), fill, dtype=v.dtype)])

    index = np.zeros((len(rows), int(b.cost.channels.max()) + 1), np.int64)
    for i, (k, _, _) in enumerate(rows):
        index[i, k] = np.arange(len(k))
    return Levels(np.stack([pad(k, k[-1]) for k, _, _ in rows]),
                  np.stack([pad(lo, 0.0) for _, lo, _ in rows]),
                  np.stack([pad(ln, 0.0) for _, _, ln in rows]),
                  np.array([len(k) for k, _, _ in rows]), index)


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
        kept = kept_channels(b.cost.channels, r, b.rt)
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


def count_below(base: np.ndarray, slope: np.ndarray, d: int, c: np.ndarray,
                bounds: tuple[int, int]) -> np.ndarray:
    """Columns of c (M, W, ascending) whose cost base + slope·c + d·c² (M, Wo) is below each bound.

    Returns (2, M, Wo). The cost rises with c: the real root of cost = bound placed among each
    chain's columns, then moved a column at a time while the exact integer cost disagrees.
    """
    m, width = c.shape
    bound = np.array(bounds, dtype=np.int64)[:, None, None]
    gap, b1 = (bound - base).astype(np.float64), slope.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = (np.sqrt(b1 * b1 + 4.0 * d * gap) - b1) / (2.0 * d) if d > 0 else gap / b1
    span = float(c.max()) + 2.0  # chain m's columns live in [m·span, (m + 1)·span)
    shift = np.arange(m)[:, None]
    root = np.where(np.isnan(root), -1.0, np.clip(root, -1.0, span - 1.0)) + shift * span
    at = np.searchsorted((c + shift * span).ravel(), root.ravel()).reshape(root.shape) - shift * width
    for _ in range(width + 1):  # a rising cost settles within a column or two
        low, high = c[shift, np.maximum(at - 1, 0)], c[shift, np.minimum(at, width - 1)]
        down = (at > 0) & (base + slope * low + d * low * low >= bound)
        up = (at < width) & (base + slope * high + d * high * high < bound)
        if not (down.any() or up.any()):
            return at
        at = at - down + up
    raise EvopruneError("internal: a Gibbs step's cost does not rise with the kept channels")


@dataclass(frozen=True)
class Block:
    """Units that share cost terms (a bottleneck's convs), with every level combination.

    Given the levels of the hubs it touches (a *row*), the block's cost terms are one integer
    per level combination of its units (a *cell*); a block that touches no hub has one row.
    """

    units: np.ndarray  # (U,) the block's units
    cells: np.ndarray  # (C, U) each unit's level index in each combination of positive weight
    cost: np.ndarray  # (R, C, 2) int64: the FLOPs and params terms of the block, per row
    log_len: np.ndarray  # (C,) log of the product of the units' ratio-interval lengths
    row: np.ndarray  # (H,) the block's row under each hub combination


@dataclass(frozen=True)
class Split:
    """The units as hubs and blocks: cost = hub terms (with the constant) + one term per block."""

    hubs: np.ndarray  # (h,) hub units (a ResNet stage's residual width); none for internal units
    hub_cells: np.ndarray  # (H, h) each hub's level index in each combination of positive weight
    hub_cost: np.ndarray  # (H, 2) int64: the terms of the hubs alone and the constant
    hub_log_len: np.ndarray  # (H,)
    blocks: list[Block]


def split(b: Bound, lv: Levels, forms: tuple[np.ndarray, np.ndarray], cap: int | None = None,
          hub_cap: int | None = None) -> Split | None:
    """Split the units into hubs and blocks that share no cost term once the hubs are fixed.

    Block-internal units split into blocks as they are. Residual units join a whole stage
    through its residual width: hubs are taken greedily (the unit joined to most others in
    the largest block) until every block has at most `cap` cells over all its rows. None
    when the hubs have more than `hub_cap` level combinations (ResNet-50's residual widths).
    """
    from scipy.sparse.csgraph import connected_components

    cap = BLOCK_CELLS if cap is None else cap
    hub_cap = HUB_COMBOS if hub_cap is None else hub_cap
    n = b.n
    joined = (forms[0][:n, :n] != 0) | (forms[1][:n, :n] != 0)
    np.fill_diagonal(joined, False)
    positive = [np.flatnonzero(lv.length[i, : lv.count[i]] > 0) for i in range(n)]
    size = np.array([len(p) for p in positive], dtype=np.float64)
    hubs: list[int] = []

    def touched(group: np.ndarray) -> np.ndarray:
        return np.array([h for h in hubs if joined[group, h].any()], dtype=np.int64)

    while True:
        rest = np.setdiff1d(np.arange(n), hubs)
        count, label = connected_components(joined[np.ix_(rest, rest)], directed=False)
        groups = [rest[label == c] for c in range(count)]
        cells = [float(np.prod(size[g]) * np.prod(size[touched(g)])) for g in groups]
        worst = groups[int(np.argmax(cells))] if groups else rest
        if not groups or max(cells) <= cap:
            break
        if len(worst) == 1 or len(hubs) >= n // 2:
            return None
        hubs.append(int(worst[np.argmax(joined[np.ix_(worst, worst)].sum(1))]))
        if float(np.prod(size[hubs])) > hub_cap:
            return None
    hub = np.array(hubs, dtype=np.int64)
    pos = grid_of(size[hub])  # (H, h) positions among each hub's levels of positive weight
    hub_cells = level_at(positive, hub, pos)
    x = np.concatenate([lv.kept[hub, hub_cells], np.ones((len(pos), 1), np.int64)], 1)
    ends = np.append(hub, n)
    hub_cost = np.stack([((x @ s[np.ix_(ends, ends)]) * x).sum(1) // 2 for s in forms], 1)
    hub_log_len = np.log(lv.length[hub, hub_cells]).sum(1)
    out = []
    for g in groups:
        t = touched(g)
        cells_g = level_at(positive, g, grid_of(size[g]))
        k = lv.kept[g, cells_g]  # (C, U)
        cols = np.array([hubs.index(h) for h in t], dtype=np.int64)  # t's columns of pos
        rows = grid_of(size[t])  # (R, T) positions of the touched hubs' levels
        k_t = lv.kept[t, level_at(positive, t, rows)]  # (R, T)
        cost = np.stack([((k @ s[np.ix_(g, g)]) * k).sum(1)[None, :] // 2 + (k @ s[g, n])[None, :]
                         + (k @ s[np.ix_(g, t)] @ k_t.T).T for s in forms], 2)
        row = (np.ravel_multi_index(tuple(pos[:, cols].T), size[t].astype(np.int64))
               if len(t) else np.zeros(len(pos), np.int64))
        out.append(Block(g, cells_g, cost, np.log(lv.length[g, cells_g]).sum(1), row))
    return Split(hub, hub_cells, hub_cost, hub_log_len, merged(out))


def level_at(positive: list[np.ndarray], units: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Level indices (P, len(units)) of positions `pos` among each unit's levels of positive weight."""
    out = np.zeros(pos.shape, np.int64)
    for c, u in enumerate(units):
        out[:, c] = positive[u][pos[:, c]]
    return out


def grid_of(sizes: np.ndarray) -> np.ndarray:
    """Every index combination (P, len(sizes)) of a grid, row-major (one empty row for none)."""
    shape = tuple(int(v) for v in sizes)
    if not shape:
        return np.zeros((1, 0), np.int64)
    return np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), 1).astype(np.int64)


def merged(parts: list[Block], cells: int = BLOCK_MERGE) -> list[Block]:
    """Small blocks under the same hubs joined up to `cells` combinations (fewer draws)."""
    out: list[Block] = []
    for blk in parts:
        last = out[-1] if out else None
        if (last is None or not np.array_equal(last.row, blk.row)
                or len(last.log_len) * len(blk.log_len) > cells):
            out.append(blk)
            continue
        a, c = np.divmod(np.arange(len(last.log_len) * len(blk.log_len)), len(blk.log_len))
        out[-1] = Block(np.concatenate([last.units, blk.units]),
                        np.concatenate([last.cells[a], blk.cells[c]], 1),
                        last.cost[:, a] + blk.cost[:, c], last.log_len[a] + blk.log_len[c],
                        last.row)
    return out


class BlockSampler:
    """Exact i.i.d. draws by rejection from a cost-tilted law that factorises over blocks.

    Proposal q ∝ Π len · exp(θ_f·f/F0 + θ_p·p/P0): the hubs' combination from its exact
    marginal under q (each block's normaliser given the hubs is tabulated), then each block's
    combination given the hubs, independently (given the hubs the cost is a sum of block
    terms). A proposal inside every band (exact integer cost) is kept with probability
    exp(-θ_f·f/F0 - θ_p·p/P0 - M), M the largest value of that exponent over the bands'
    (f, p) box, so kept draws follow Π len on the bands exactly; each ratio is then uniform on
    its level's interval. Thin bands make the bound tight: the tilt only moves q onto them.
    """

    def __init__(self, b: Bound, lv: Levels, parts: Split, theta: np.ndarray) -> None:
        self.b, self.lv, self.parts = b, lv, parts
        self.blocks = parts.blocks
        self.theta = theta
        self.scale = np.array([b.cost.base_flops, b.cost.base_params], dtype=np.float64)
        self.cdf: list[np.ndarray] = []  # per block: the rows' cdfs one after another
        self.start: list[np.ndarray] = []  # per block and row: where its cdf starts
        self.guide: list[tuple[np.ndarray, np.ndarray]] | None = None  # built by `draw`
        tf, tp = theta / self.scale
        log_h = parts.hub_log_len + parts.hub_cost[:, 0] * tf + parts.hub_cost[:, 1] * tp
        for blk in self.blocks:
            log_q = blk.log_len[None, :] + blk.cost[..., 0] * tf + blk.cost[..., 1] * tp
            top = log_q.max(1, keepdims=True)
            w = np.exp(log_q - top)
            z = w.sum(1)
            log_h = log_h + (np.log(z) + top[:, 0])[blk.row]
            cdf = np.cumsum(w / z[:, None], axis=1) + np.arange(len(w))[:, None]
            self.cdf.append(cdf.ravel())
            self.start.append(np.concatenate([[0.0], cdf[:-1, -1]]))
        self.hub_cdf = np.cumsum(np.exp(log_h - log_h.max()))
        self.bound = tilt_bound(b, theta)

    def propose(self, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """m proposals: the hub combination and each block's cell (B + 1, m), exact costs (m, 2)."""
        u = rng.random((len(self.blocks) + 1, m))
        picks = np.empty((len(self.blocks) + 1, m), np.int64)
        hub = np.minimum(np.searchsorted(self.hub_cdf, u[0] * self.hub_cdf[-1], side="right"),
                         len(self.hub_cdf) - 1)
        picks[0] = hub
        flops, params = self.parts.hub_cost[hub, 0], self.parts.hub_cost[hub, 1]
        for k, (blk, cdf, start) in enumerate(zip(self.blocks, self.cdf, self.start,
                                                  strict=True)):
            row = blk.row[hub]
            width = len(blk.log_len)
            lo = start[row]
            q = lo + u[k + 1] * (cdf[(row + 1) * width - 1] - lo)  # within the row's cdf
            if self.guide is None:
                pick = np.searchsorted(cdf, q, side="right")
            else:  # the same cells, most without a search
                first, last = self.guide[k]
                bucket = np.minimum((q * (len(first) / cdf[-1])).astype(np.int64), len(first) - 1)
                pick = first[bucket].astype(np.int64)
                unsure = np.flatnonzero(last[bucket] != pick)
                pick[unsure] = np.searchsorted(cdf, q[unsure], side="right")
            pick = np.clip(pick, row * width, (row + 1) * width - 1)  # float edges stay in the row
            flat = blk.cost.reshape(-1, 2)
            flops = flops + flat[pick, 0]
            params = params + flat[pick, 1]
            picks[k + 1] = pick - row * width
        return picks, np.stack([flops, params], 1)

    def levels_of(self, picks: np.ndarray) -> np.ndarray:
        """Level indices (M, N) of proposals given as `propose`'s picks (B + 1, M)."""
        idx = np.empty((picks.shape[1], self.b.n), np.int64)
        idx[:, self.parts.hubs] = self.parts.hub_cells[picks[0]]
        for blk, pick in zip(self.blocks, picks[1:], strict=True):
            idx[:, blk.units] = blk.cells[pick]
        return idx

    def accept(self, total: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Which proposals (by their costs) are kept: inside every band, then the tilt's ratio."""
        ratio = total / self.scale
        inside = self.b.overshoot(ratio[:, 0], ratio[:, 1]) == 0
        log_keep = np.minimum(-(ratio @ self.theta) - self.bound, 0.0)
        return inside & (rng.random(len(total)) < np.exp(log_keep))

    def draw(self, n: int, rng: np.random.Generator, rate: float) -> np.ndarray:
        """n i.i.d. recipes (n, N); `rate` (kept per proposal, from a pilot) sizes the batches."""
        buckets = sum(min(GUIDE * len(cdf), GUIDE_MAX) for cdf in self.cdf)
        if self.guide is None and n / rate * len(self.blocks) > 4 * buckets:  # pays for itself
            self.guide = [guide_table(cdf) for cdf in self.cdf]
        got: list[np.ndarray] = []
        need = n
        while need > 0:
            m = int(min(max(1.3 * need / rate, BLOCK_MIN_BATCH), BLOCK_BATCH))
            picks, total = self.propose(m, rng)
            keep = np.flatnonzero(self.accept(total, rng))[:need]
            got.append(self.ratios(self.levels_of(picks[:, keep]), rng))
            need -= len(keep)
        return np.concatenate(got)

    def ratios(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ratios uniform on the intervals of levels idx (a float edge case: the level's middle)."""
        units = np.arange(self.b.n)
        lo, length = self.lv.lo[units, idx], self.lv.length[units, idx]
        r = lo + rng.random(idx.shape) * length
        bad = kept_channels(self.b.cost.channels, r, self.b.rt) != self.lv.kept[units, idx]
        return np.where(bad, lo + 0.5 * length, r)

    def rate(self, m: int, rng: np.random.Generator) -> float:
        """Kept draws per proposal, estimated from m proposals."""
        return float(self.accept(self.propose(m, rng)[1], rng).mean())


def guide_table(cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket of [0, cdf[-1]): the first and last cell `searchsorted(cdf, ·)` can give there.

    Where the two agree the bucket picks its cell without a search (most buckets); the edges
    are widened by 1e-12 of the total so float rounding never hides a second cell.
    """
    buckets = int(min(GUIDE * len(cdf), GUIDE_MAX))
    edges = np.arange(buckets + 1) / buckets * cdf[-1]
    slack = 1e-12 * cdf[-1]
    first = np.searchsorted(cdf, edges[:-1] - slack, side="right")
    last = np.searchsorted(cdf, edges[1:] + slack, side="right")
    return first.astype(np.int32), np.minimum(last, len(cdf) - 1).astype(np.int32)


def tilt_bound(b: Bound, theta: np.ndarray) -> float:
    """The largest -θ·(f/F0, p/P0) over the bands' box of (FLOPs, params) ratios."""
    s, cost = b.space, b.cost
    f_lo = f_hi = p_lo = p_hi = 0.0
    for form, lo, hi in monotone_bands(b):
        base = cost.base_flops if form == 0 else cost.base_params
        if form == 0:
            f_lo, f_hi = (lo - 1) / base, (hi + 1) / base
        else:
            p_lo, p_hi = (lo - 1) / base, (hi + 1) / base
    if s.c_mcb is not None:  # mCB = f / p within c_mcb ± mcb_tol
        p_lo, p_hi = f_lo / (s.c_mcb + s.mcb_tol) * (1 - 1e-9), f_hi / (s.c_mcb - s.mcb_tol) * (1 + 1e-9)
    return float(max(-(theta[0] * f + theta[1] * p) for f in (f_lo, f_hi) for p in (p_lo, p_hi)))


def solve_tilt(b: Bound, parts: Split, free: np.ndarray) -> np.ndarray:
    """θ (the free entries) whose tilted law has its mean (FLOPs, params) ratios at the bands' centres.

    Newton's method on the tilted mean (its Jacobian is the tilted covariance), halving steps
    that do not bring the mean closer; θ stays 0 where `free` is False. The moments are read
    on a regular subset of each large block's cells: any θ keeps the draws exact. Under hubs
    the law is a mixture over their combinations (the covariance: within plus between).
    """
    s, cost = b.space, b.cost
    scale = np.array([cost.base_flops, cost.base_params], dtype=np.float64)
    goal = np.zeros(2)
    centre = {form: 0.5 * (lo + hi) / scale[form] for form, lo, hi in monotone_bands(b)}
    goal[0] = centre.get(0, 0.0)
    goal[1] = centre[1] if 1 in centre else goal[0] / s.c_mcb if s.c_mcb is not None else 0.0
    thin = [max(blk.cost.shape[0] * len(blk.log_len) // TILT_CELLS, 1) for blk in parts.blocks]
    scaled = [(blk.cost[:, ::t] / scale, blk.log_len[::t], blk.row)
              for blk, t in zip(parts.blocks, thin, strict=True)]
    hub_cost = parts.hub_cost / scale

    def moments(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_h = parts.hub_log_len + hub_cost @ theta
        means = hub_cost.copy()  # (H, 2): the mean given each hub combination
        within = []
        for c, log_len, row in scaled:
            log_q = log_len[None, :] + c @ theta  # (R, C)
            top = log_q.max(1, keepdims=True)
            w = np.exp(log_q - top)
            z = w.sum(1)
            w /= z[:, None]
            mu = np.einsum("rc,rck->rk", w, c)
            d = c - mu[:, None, :]
            within.append((np.einsum("rc,rck,rcl->rkl", w, d, d), row))
            log_h = log_h + (np.log(z) + top[:, 0])[row]
            means += mu[row]
        h = np.exp(log_h - log_h.max())
        h /= h.sum()
        mean = h @ means
        d = means - mean
        cov = (d * h[:, None]).T @ d
        for v, row in within:
            cov += np.tensordot(np.bincount(row, h, minlength=len(v)), v, axes=1)
        return mean, cov

    theta = np.zeros(2)
    if not free.any():
        return theta
    mean, cov = moments(theta)
    for _ in range(TILT_STEPS):
        gap = (mean - goal)[free]
        if np.abs(gap).max() < 1e-6:
            break
        step = np.zeros(2)
        step[free] = np.linalg.lstsq(cov[np.ix_(free, free)], -gap, rcond=None)[0]
        for _ in range(30):
            trial = np.clip(theta + step, -TILT_MAX, TILT_MAX)
            t_mean, t_cov = moments(trial)
            if np.abs((t_mean - goal)[free]).max() < np.abs(gap).max():
                break
            step /= 2
        theta, mean, cov = trial, t_mean, t_cov
    return theta


class _Chains:
    """Many Gibbs chains at once: level indices, kept counts, cost gradients and costs."""

    def __init__(self, sampler: Sampler, starts: np.ndarray) -> None:
        b, lv = sampler.b, sampler.lv
        kept = kept_channels(b.cost.channels, starts, b.rt)
        self.b, self.lv, self.forms, self.bands = b, lv, sampler.forms, sampler.bands
        self.r = starts.copy()
        self.idx = lv.index[np.arange(b.n), kept]
        self.x = np.concatenate([kept, np.ones((len(kept), 1), np.int64)], axis=1)
        self.grad = [self.x @ s for s in self.forms]  # S·x per chain (S symmetric)
        self.cost = [(g * self.x).sum(1) // 2 for g in self.grad]

    def window(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Candidate level indices (M, W) of unit i, ascending, and their weights (0 outside).

        A unit with more than WINDOW levels gets a random lattice: a random stride, placed
        uniformly over its positions around the current level, so each lattice is drawn with
        the same probability from each of its points (the step keeps the target).
        """
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

    def pair_step(self, i: int, j: int, rng: np.random.Generator) -> None:
        """Redraw units i and j of every chain from the target given the other units."""
        ci, wi = self.window(i, rng)
        cj, wj = self.window(j, rng)
        a, c = self.lv.kept[i, ci], self.lv.kept[j, cj]
        xi, xj = self.x[:, i, None], self.x[:, j, None]
        outer = []
        for s, g, total in zip(self.forms, self.grad, self.cost, strict=True):
            di, dj, e = s[i, i] // 2, s[j, j] // 2, s[i, j]
            # cost = rest + hi·a + di·a² + hj·c + dj·c² + e·a·c with i keeping a and j keeping c
            hi = g[:, i, None] - s[i, i] * xi - e * xj
            hj = g[:, j, None] - s[j, j] * xj - e * xi
            rest = total[:, None] - (hi * xi + hj * xj + di * xi * xi + dj * xj * xj + e * xi * xj)
            outer.append((rest + hi * a + di * a * a, hj + e * a, dj))
        rows, pa, pc, costs = self._draw(outer, wi, c, wj, rng)
        ri, rj = self.uniform_in(i, ci[rows, pa], rng), self.uniform_in(j, cj[rows, pc], rng)
        self._set(rows, np.array([i, j]), np.stack([a[rows, pa], c[rows, pc]], 1),
                  np.stack([ri, rj], 1), costs)

    def flow_step(self, j: int, flow: Flow, rng: np.random.Generator) -> None:
        """Redraw unit j and a flow t of the flow's units (j not among them) per chain.

        The flow moves each unit's logit log(r / (r_max - r)) by ±t (its sign), a bijection of
        [0, r_max] onto itself, so no unit near 0 or r_max blocks it. The t lie on a lattice
        window placed at random around 0 (the same window from each of its points); within
        it t is drawn ∝ the target at the moved point times the flow's Jacobian, which keeps
        the target (a group move, Liu & Sabatti 2000). A residual width flowing against its
        stage's block-internal units is the move pairs of units make slowly; unit j, drawn
        with it, lands the cost inside the band.
        """
        units, sign, s_ff = flow
        moved_r, kf, wf = self._flowed(units, sign, rng)
        cj, wj = self.window(j, rng)
        a = self.lv.kept[j, cj]
        outer = self._costs_with(j, units, kf - self.x[:, None, units], s_ff)
        rows, pt, pa, costs = self._draw(outer, wf, a, wj, rng)
        rj = self.uniform_in(j, cj[rows, pa], rng)
        self._set(rows, np.append(units, j), np.concatenate([kf[rows, pt], a[rows, pa, None]], 1),
                  np.concatenate([moved_r[rows, pt], rj[:, None]], 1), costs)

    def _flowed(self, units: np.ndarray, sign: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ratios (M, T, F) and kept counts of `units` after each flow t, and the Jacobians (M, T)."""
        r_max = self.b.space.r_max
        t = (np.arange(SHIFTS) - rng.integers(0, SHIFTS, len(self.x))[:, None]) * FLOW_STEP
        r = self.r[:, None, units]  # (M, 1, F)
        inner = (r > 0) & (r < r_max)  # ratios at 0 or r_max (starts only) stay put
        rs = np.where(inner, r, 0.5 * r_max)
        logit = np.log(rs) - np.log(r_max - rs)
        moved = np.where(inner, r_max / (1.0 + np.exp(-(logit + t[:, :, None] * sign))), r)
        ms = np.where(inner, moved, 0.5 * r_max)
        log_jac = np.log(ms) + np.log(r_max - ms) - np.log(rs) - np.log(r_max - rs)
        kept = kept_channels(self.b.cost.channels[units], moved, self.b.rt[units])
        return moved, kept, np.exp(log_jac.sum(2))

    def _costs_with(self, j: int, units: np.ndarray, step: np.ndarray, s_ff: list[np.ndarray]
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per form: cost = base + slope·a + d·a² with `units` moved by step (M, T, F), j at a."""
        xj, out = self.x[:, j, None], []
        for s, g, total, sff in zip(self.forms, self.grad, self.cost, s_ff, strict=True):
            moved = (step * g[:, None, units]).sum(2) + ((step @ sff) * step).sum(2) // 2
            slope = g[:, j, None] + step @ s[units, j] - s[j, j] * xj
            base = total[:, None] + moved - xj * (slope + s[j, j] * xj) + s[j, j] // 2 * xj * xj
            out.append((base, slope, s[j, j] // 2))
        return out

    def _draw(self, outer: list[tuple[np.ndarray, np.ndarray, np.ndarray]], wo: np.ndarray,
              c: np.ndarray, wc: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Draw one (outer, column) cell per chain ∝ wo·wc where every band holds.

        `outer` gives per form (FLOPs, params) the cost base + slope·c + d·c² of each outer
        candidate (M, Wo) with the inner unit keeping c (M, Wc). Returns the chains that have a
        weighted cell, their outer and column picks and the picked cells' exact costs.
        """
        first, stop = self._interval(outer, c)
        if self.b.space.c_mcb is None:  # the runs are the band exactly: draw from their sums
            return self._draw_runs(outer, wo, c, wc, first, stop, rng)
        span = (stop - first).ravel()  # the cells: each (chain, outer) run, flat, by chain
        owner = np.repeat(np.arange(span.size), span)
        col = first.ravel()[owner] + np.arange(owner.size) - np.repeat(np.cumsum(span) - span, span)
        chain, row = np.divmod(owner, wo.shape[1])
        cc = c[chain, col]
        costs = [base[chain, row] + slope[chain, row] * cc + d * cc * cc for base, slope, d in outer]
        weight = wo[chain, row] * wc[chain, col]
        if self.b.space.c_mcb is not None:  # the runs hold the FLOPs and params bands exactly
            cost = self.b.cost
            weight *= self.b.inside(costs[0] / cost.base_flops, costs[1] / cost.base_params)
        cum = np.concatenate([[0.0], np.cumsum(weight)])
        ends = np.searchsorted(chain, np.arange(len(c)), side="right")  # last cell + 1, by chain
        before = cum[np.concatenate([[0], ends[:-1]])]
        total = cum[ends] - before
        moved = np.flatnonzero(total > 0)  # a chain with no weighted cell stays
        u = before[moved] + rng.random(len(c))[moved] * total[moved]
        pick = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, np.maximum(ends[moved] - 1, 0))
        return moved, row[pick], col[pick], [v[pick] for v in costs]

    @staticmethod
    def _draw_runs(outer: list[tuple[np.ndarray, np.ndarray, np.ndarray]], wo: np.ndarray,
                   c: np.ndarray, wc: np.ndarray, first: np.ndarray, stop: np.ndarray,
                   rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """`_draw` where the runs [first, stop) are exactly the in-band cells (no mCB band).

        The outer pick ∝ wo times its run's summed wc, then the column ∝ wc within the run:
        the same law as drawing the cell ∝ wo·wc, without listing the cells.
        """
        m = len(c)
        cum = np.concatenate([np.zeros((m, 1)), np.cumsum(wc, 1)], 1)  # (M, Wc + 1)
        chains = np.arange(m)[:, None]
        run = cum[chains, stop] - cum[chains, first]
        row_w = np.cumsum(wo * run, 1)
        moved = np.flatnonzero(row_w[:, -1] > 0)  # a chain with no weighted cell stays
        u = rng.random((2, m))[:, moved]
        row = np.minimum((row_w[moved] <= (u[0] * row_w[moved, -1])[:, None]).sum(1),
                         wo.shape[1] - 1)
        lo, hi = first[moved, row], stop[moved, row]
        v = cum[moved, lo] + u[1] * (cum[moved, hi] - cum[moved, lo])
        col = np.clip((cum[moved] <= v[:, None]).sum(1) - 1, lo, np.maximum(hi - 1, lo))
        cc = c[moved, col]
        costs = [base[moved, row] + slope[moved, row] * cc + d * cc * cc for base, slope, d in outer]
        return moved, row, col, costs

    def _interval(self, outer: list[tuple[np.ndarray, np.ndarray, np.ndarray]], c: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Per (chain, outer candidate): the columns [first, stop) inside every monotone band.

        Each cost rises with c (no coefficient is negative), so a band is one run of columns;
        `_draw` checks every band exactly on that run.
        """
        first = np.zeros(outer[0][0].shape, np.int64)
        stop = np.full(outer[0][0].shape, c.shape[1], np.int64)
        for form, lo, hi in self.bands:
            below_lo, below_hi = count_below(*outer[form], c, (lo, hi + 1))
            first, stop = np.maximum(first, below_lo), np.minimum(stop, below_hi)
        return first, np.maximum(stop, first)

    def uniform_in(self, i: int, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ratios of unit i uniform in the intervals of levels idx (the target given the level)."""
        return self.lv.lo[i, idx] + rng.random(idx.shape) * self.lv.length[i, idx]

    def _set(self, rows: np.ndarray, units: np.ndarray, kept: np.ndarray, r: np.ndarray,
             costs: list[np.ndarray]) -> None:
        """Set `units` of chains `rows` to ratios r (R, U) keeping `kept`, whose costs are `costs`."""
        step = kept - self.x[rows[:, None], units]
        for g, total, new, s in zip(self.grad, self.cost, costs, self.forms, strict=True):
            g[rows] += step @ s[units]
            total[rows] = new
        self.r[rows[:, None], units] = r
        self.x[rows[:, None], units] = kept
        self.idx[rows[:, None], units] = self.lv.index[units, kept]

    def ratios(self) -> np.ndarray:
        """The chains' ratios (a ratio a float edge case moved off its level: its level's middle)."""
        kept, units = self.x[:, :-1], np.arange(self.b.n)
        bad = kept_channels(self.b.cost.channels, self.r, self.b.rt) != kept
        middle = self.lv.lo[units, self.idx] + 0.5 * self.lv.length[units, self.idx]
        return np.where(bad, np.where(kept == self.b.cost.channels, 0.0, middle), self.r)


class Sampler:
    """The paper's initial space restricted to a bound space's bands: blocks, rejection, Gibbs."""

    def __init__(self, b: Bound) -> None:
        self.b = b
        self.lv = levels(b)
        self.forms = (quadratic_form(b, True), quadratic_form(b, False))
        self.bands = monotone_bands(b)
        widths = b.cost.channels
        self.flows = [self._flow(np.flatnonzero(widths == widths[i]), i) for i in range(b.n)]
        # the unit drawn with unit i's flow: any unit of another width (finer, or elsewhere)
        self.others = [np.flatnonzero(widths != widths[i]) for i in range(b.n)]
        self._block: tuple[BlockSampler, float] | bool | None = False  # False: not built yet

    @property
    def block(self) -> tuple[BlockSampler, float] | None:
        """The block sampler with its pilot rate (kept per proposal), or None where it does not apply.

        Built on first use: θ solved on each thin band (FLOPs, params); beside it, for an mCB
        band θ on params too, for a FLOPs range no tilt (plain rejection over the levels); a
        fixed-seed pilot keeps the best. None when `split` finds no blocks small enough or the
        best rate per block drawn is below BLOCK_MIN_RATE (Gibbs is then faster).
        """
        if self._block is False:
            self._block = self._build_block()
        return self._block  # type: ignore[return-value]

    def _build_block(self) -> tuple[BlockSampler, float] | None:
        parts = split(self.b, self.lv, self.forms)
        if parts is None:
            return None
        s = self.b.space
        banded = {form for form, _, _ in self.bands}
        frees = [np.array([0 in banded, 1 in banded])]  # thin bands: tilt onto each
        if s.c_mcb is not None:  # a wide params range: tilting params may cost more than it gains
            frees.append(np.array([True, True]))
        if s.c_flops_max is not None:  # a wide FLOPs range, likewise
            frees.append(np.zeros(2, bool))
        rng = np.random.default_rng(0)
        best: tuple[BlockSampler, float] | None = None
        for free in frees:
            sampler = BlockSampler(self.b, self.lv, parts, solve_tilt(self.b, parts, free))
            rate = sampler.rate(BLOCK_PILOT, rng)
            if best is None or rate > best[1]:
                best = (sampler, rate)
        if best is None or best[1] / (len(best[0].blocks) + 1) < BLOCK_MIN_RATE:
            return None
        return best

    def _flow(self, group: np.ndarray, i: int) -> Flow:
        """Unit i flowing against the other units of `group` (its width: a ResNet stage)."""
        sign = np.where(group == i, 1.0, -1.0)
        return group, sign, [s[np.ix_(group, group)] for s in self.forms]

    def _flow_partner(self, i: int, rng: np.random.Generator) -> tuple[int, Flow]:
        """Unit i's flow and the unit drawn with it: of another width, else one left out of it."""
        if len(self.others[i]):
            return int(rng.choice(self.others[i])), self.flows[i]
        group = self.flows[i][0]
        j = int(rng.choice(group[group != i])) if len(group) > 1 else i
        return j, self._flow(group[group != j], i)

    def gibbs(self, starts: np.ndarray, seed: int, sweeps: int = SWEEPS) -> np.ndarray:
        """One draw per chain, chains started at in-band recipes `starts` (M, N); deterministic."""
        chunks = range(0, len(starts), CHUNK)
        seeds = np.random.SeedSequence(seed).spawn(len(chunks))
        out = [self._run(starts[k: k + CHUNK], np.random.default_rng(s), sweeps)
               for k, s in zip(chunks, seeds, strict=True)]
        return np.concatenate(out) if out else np.empty((0, self.b.n))

    def _run(self, starts: np.ndarray, rng: np.random.Generator, sweeps: int) -> np.ndarray:
        """Sweeps of random disjoint pairs, then each unit's flow against its width group."""
        chains, n = _Chains(self, starts), self.b.n
        for _ in range(sweeps):
            for i, j in self._pairs(rng):
                chains.pair_step(int(i), int(j), rng)
            for i in rng.permutation(n):
                j, flow = self._flow_partner(int(i), rng)
                if len(flow[0]) > 1 or n == 1:  # one unit alone: an empty flow, j redrawn
                    chains.flow_step(j, flow, rng)
        return chains.ratios()

    def _pairs(self, rng: np.random.Generator) -> np.ndarray:
        """Disjoint random pairs covering every unit (one unit twice when N is odd)."""
        n = self.b.n
        if n < 2:
            return np.empty((0, 2), np.int64)
        order = rng.permutation(n)
        if n % 2:
            order = np.append(order, rng.choice(order[:-1]))
        return order.reshape(-1, 2)

    def draw(self, n: int, seed: int, starts: Callable[[np.random.Generator, int], np.ndarray],
             method: str = "auto") -> np.ndarray:
        """n i.i.d. draws of the target: the block sampler where it applies, else `gibbs`.

        `gibbs` (the path before the block sampler): rejection if a pilot batch says it is
        cheap, else Gibbs chains started at `starts(rng, m)`, m in-band recipes. `blocks`
        refuses a space the block sampler does not apply to.
        """
        if method not in METHODS:
            raise EvopruneError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        rng = np.random.default_rng(seed)
        if method != "gibbs" and self.block is not None:
            sampler, rate = self.block
            return sampler.draw(n, rng, rate)
        if method == "blocks":
            raise EvopruneError("the block sampler does not apply to this space (a block of "
                                "units sharing cost terms has too many level combinations, or "
                                "its tilted proposals rarely land in the bands): use auto")
        got, draws = reject(self.b, n, rng, PILOT, PILOT)
        need = n - len(got)
        expected = need * draws / max(len(got), 1e-9)  # rejection draws for the rest
        if need and expected <= max(REJECT_PER_DRAW * need, REJECT_FLOOR):
            more, _ = reject(self.b, need, rng, int(2 * expected) + PILOT, PILOT)
            got, need = np.concatenate([got, more]), need - len(more)
        if need:
            got = np.concatenate([got, self.gibbs(starts(rng, need), int(rng.integers(2**63)))])
        return got
