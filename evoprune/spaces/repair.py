"""Exact integer repair: greedy single-unit rounding steps until the rounded channels fit the bands.

A row the greedy steps leave outside walks toward the nearest of the bound's anchors (in-band
recipes found when the space was bound, `reach.explore`): the first point of the segment whose
greedy repair lands inside, the anchor itself at the end. So in a space with a witness every
row is repaired, however sparse the in-band recipes are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from evoprune.network.units import kept_channels

if TYPE_CHECKING:
    from evoprune.spaces.bands import Bound


def ratios_for(b: Bound, kept: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Ratios in [0, r_max] that keep `kept` channels, each as near to `near` as it can be."""
    c, rt, r_max = b.c, b.rt, b.space.r_max
    centre = 1.0 - kept / c
    half = 0.45 * rt / c
    r = np.clip(np.clip(near, centre - half, centre + half), 0.0, r_max)
    fallback = np.where(kept == b.cost.channels, 0.0,
                        np.where(kept == b.kmin, r_max, np.clip(centre, 0.0, r_max)))
    return np.where(kept_channels(b.cost.channels, r, rt) == kept, r, fallback)


def _one_unit_moves(x: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """(M, 2N, N) copies of rows x (M, N): copy j has unit j set to up, copy N + j to down."""
    n = x.shape[1]
    diag = np.arange(n)
    moves = np.repeat(x[:, None, :], 2 * n, axis=1)
    moves[:, diag, diag] = up
    moves[:, n + diag, diag] = down
    return moves


def best_moves(b: Bound, k: np.ndarray, r: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the one-step move that lowers the violation most: (kept, ratios, violation).

    Ties go to the smallest ratio change; a unit that cannot step that way is never chosen.
    """
    c, rt, n = b.cost.channels, b.rt, b.n
    up = np.minimum((k // rt + 1) * rt, c)
    down = np.maximum((k - 1) // rt * rt, b.kmin)
    steps_k = np.concatenate([up, down], axis=1)  # (m, 2N): the moved unit's new width
    steps_r = np.concatenate([ratios_for(b, up, r), ratios_for(b, down, r)], 1)
    cand_k = _one_unit_moves(k, up, down)
    cand_r = _one_unit_moves(r, steps_r[:, :n], steps_r[:, n:])
    vs = b.violation(cand_k.reshape(-1, n), cand_r.reshape(-1, n)).reshape(len(k), 2 * n)
    vs[steps_k == np.concatenate([k, k], axis=1)] = np.inf  # no step possible there
    best_v = vs.min(1)
    moved = np.abs(steps_r - np.concatenate([r, r], axis=1))
    best = np.where(vs <= best_v[:, None] + 1e-12, moved, np.inf).argmin(1)
    rows = np.arange(len(k))
    return cand_k[rows, best], cand_r[rows, best], best_v


WALK = (0.25, 0.5, 0.75, 1.0)  # points of the segment toward the nearest anchor (1: the anchor)


def repair(b: Bound, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy repair (`greedy`), then a walk toward the nearest anchor for the rows left outside.

    Returns the repaired recipes and which rows ended inside every band (all of them when the
    bound has anchors).
    """
    out, ok = greedy(b, r)
    reach = getattr(b, "reach", None)
    if ok.all() or reach is None or not len(reach.anchors):
        return out, ok
    rows = np.flatnonzero(~ok)
    start = r[rows]
    anchors = reach.anchors
    near = anchors[((start[:, None, :] - anchors[None]) ** 2).sum(2).argmin(1)]
    for t in WALK:
        moved, inside = greedy(b, near if t == 1 else start + t * (near - start))
        out[rows[inside]], ok[rows[inside]] = moved[inside], True
        rows, start, near = rows[~inside], start[~inside], near[~inside]
        if not len(rows):
            break
    return out, ok


def greedy(b: Bound, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-step moves of single units, on the exact cost, for many recipes at once.

    Each round moves every row still outside a band by its best move while that lowers its
    violation. Returns the repaired recipes and which rows ended inside every band.
    """
    r = r.copy()
    kept = kept_channels(b.cost.channels, r, b.rt)
    v = b.violation(kept, r)
    active = v > 0
    for _ in range(4 * b.n + 8):
        rows = np.flatnonzero(active)
        if not len(rows):
            break
        move_k, move_r, move_v = best_moves(b, kept[rows], r[rows])
        better = move_v < v[rows]
        take = rows[better]
        kept[take], r[take], v[take] = move_k[better], move_r[better], move_v[better]
        active[rows[~better]] = False
        active[take] = v[take] > 0
    return r, v == 0
