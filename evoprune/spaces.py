"""Pruning spaces (Sec. 3 of the paper): bands on FLOPs, params, mCB and recipe STD.

A `PruningSpace` is the frozen configuration; `Decoder` binds it to a model's cost model and maps
any genotype g in [0, 1]^N (one static float per unit, as an optimizer proposes) to a recipe
inside every band *after channel rounding*, by construction rather than rejection:

1. a base recipe from g: r0 = R·g (initial, FLOPs, params and mCB spaces) or a standardised
   perturbation z = Φ⁻¹(g) (STD spaces);
2. continuous offsets solved by bisection on the relaxed (real-valued channel) cost: a common
   offset t for the FLOPs (or params) band; for mCB or FLOPs+params bands a second offset s along
   d, each unit's standardised log FLOPs-per-param, which moves FLOPs and params differently;
   for STD spaces the scale σ of z such that std(clip(u + σz, 0, R)) = c_std;
3. a discrete repair: single-unit moves of one rounding step, chosen greedily on the exact
   integer cost, until the rounded channels are inside every band.

A genotype whose repair fails (rare: an extreme corner of the box) is blended toward the
neutral genotype until it succeeds; the neutral genotype is decoded when the space is bound, so
a space that binds decodes every genotype, and an unreachable space is refused up front with
the reachable range in the message.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.special import ndtri

from evoprune.cost import CostModel
from evoprune.errors import EvopruneError
from evoprune.units import kept_channels

BISECT_INNER = 26  # halvings of the common offset: 2^-26 of its range (~1e-8)
BISECT_OUTER = 20  # halvings of the second offset (s or σ): 2^-20 of its range
BLENDS = (1.0, 0.75, 0.5, 0.25, 0.0)  # fallbacks toward the neutral genotype


@dataclass(frozen=True)
class PruningSpace:
    """A pruning space: FLOPs and/or params bands, optionally an mCB or STD constraint."""

    c_flops: float | None = None
    delta: float = 0.002
    c_params: float | None = None
    c_mcb: float | None = None
    mcb_tol: float = 0.1
    c_std: float | None = None
    std_tol: float = 0.05  # guaranteed |std(recipe) - c_std| <= std_tol · c_std
    r_max: float = 0.95
    round_to: int = 1

    def __post_init__(self) -> None:
        """Refuse impossible configurations before any work."""
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise EvopruneError(message)

        def unit_interval(name: str, v: float | None) -> None:
            check(v is None or (math.isfinite(v) and 0 < v <= 1), f"{name} must be in (0, 1], got {v}")

        unit_interval("c_flops", self.c_flops)
        unit_interval("c_params", self.c_params)
        check(self.c_flops is not None or self.c_params is not None,
              "a pruning space needs --c-flops or --c-params")
        check(math.isfinite(self.delta) and 0 < self.delta < 0.5, f"delta must be in (0, 0.5), got {self.delta}")
        check(math.isfinite(self.r_max) and 0 < self.r_max < 1, f"r_max must be in (0, 1), got {self.r_max}")
        check(isinstance(self.round_to, int) and self.round_to >= 1,
              f"round_to must be a positive integer, got {self.round_to}")
        if self.c_mcb is not None:
            check(math.isfinite(self.c_mcb) and self.c_mcb > 0, f"c_mcb must be positive, got {self.c_mcb}")
            check(math.isfinite(self.mcb_tol) and 0 < self.mcb_tol < self.c_mcb,
                  f"mcb_tol must be in (0, c_mcb), got {self.mcb_tol}")
            check(self.c_flops is not None, "an mCB space needs --c-flops (mCB fixes params from it)")
            check(self.c_params is None and self.c_std is None,
                  "give one of --c-mcb, --c-std and --c-params, not several")
        if self.c_std is not None:
            check(math.isfinite(self.c_std) and 0 < self.c_std <= self.r_max / 2,
                  f"c_std must be in (0, r_max/2 = {self.r_max / 2}], got {self.c_std}")
            check(math.isfinite(self.std_tol) and 0 < self.std_tol < 1,
                  f"std_tol must be in (0, 1), got {self.std_tol}")
            check(self.c_flops is None or self.c_params is None,
                  "an STD space takes one band: --c-flops or --c-params, not both")

    @property
    def kind(self) -> str:
        """One of initial, std, mcb, params, flops+params."""
        if self.c_std is not None:
            return "std"
        if self.c_mcb is not None:
            return "mcb"
        if self.c_flops is not None and self.c_params is not None:
            return "flops+params"
        return "initial" if self.c_flops is not None else "params"

    @property
    def label(self) -> str:
        """A short name as the paper writes it: STD-0.1, mCB-1.0, params, initial."""
        if self.c_std is not None:
            return f"STD-{self.c_std:g}"
        return f"mCB-{self.c_mcb:g}" if self.c_mcb is not None else self.kind

    def bands(self) -> str:
        """Describe the bands in words: `(FLOPs 0.25±0.002, mCB 1±0.1, r_max 0.95, round_to 1)`."""
        parts = []
        if self.c_flops is not None:
            parts.append(f"FLOPs {self.c_flops:g}±{self.delta:g}")
        if self.c_params is not None:
            parts.append(f"params {self.c_params:g}±{self.delta:g}")
        if self.c_mcb is not None:
            parts.append(f"mCB {self.c_mcb:g}±{self.mcb_tol:g}")
        if self.c_std is not None:
            parts.append(f"std {self.c_std:g}±{self.std_tol * self.c_std:.2g}")
        return f"({', '.join(parts)}, r_max {self.r_max:g}, round_to {self.round_to})"

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data (a study's `space` attr)."""
        return {"kind": self.kind, **asdict(self)}


class Decoded(NamedTuple):
    """A batch of decoded recipes with their exact figures (one row per genotype)."""

    recipes: np.ndarray  # (M, N) ratios in [0, r_max]
    kept: np.ndarray  # (M, N) kept channels (what `prune` keeps for these ratios)
    flops_ratio: np.ndarray
    params_ratio: np.ndarray
    mcb: np.ndarray
    std: np.ndarray
    inside: np.ndarray  # every band holds (True for every row a bound Decoder returns)


class _Solved(NamedTuple):
    recipes: np.ndarray
    ok: np.ndarray


class Decoder:
    """A pruning space bound to one model's cost model: decode, sample, uniform baseline."""

    def __init__(self, space: PruningSpace, cost: CostModel) -> None:
        self.space = space
        self.cost = cost
        self.n = len(cost.channels)
        self._c = cost.channels.astype(np.float64)
        self._kmin = kept_channels(cost.channels, np.full(self.n, space.r_max), space.round_to)
        flops_marginal, params_marginal = cost.marginals()
        density = np.log(np.maximum(flops_marginal, 1e-12) / np.maximum(params_marginal, 1e-12))
        spread = density.std()
        self._d = (density - density.mean()) / spread if spread > 1e-9 else np.zeros(self.n)
        self._s_max = 8.0 * space.r_max
        z = np.resize([1.0, -1.0], self.n)
        self._z_neutral = (z - z.mean()) / z.std() if self.n > 1 else np.zeros(1)
        self._check_reachable()

    # ----------------------------------------------------------------------------- bands
    def _targets(self) -> tuple[float | None, float | None]:
        """Centre of the FLOPs band and of the params band (the mCB band fixes params)."""
        s = self.space
        if s.c_mcb is not None:
            return s.c_flops, None
        return s.c_flops, s.c_params

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

    # ------------------------------------------------------------------ continuous solve
    def _relaxed(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.cost.relaxed(self._c * (1.0 - r))

    def _solve_offset(self, base: np.ndarray, target: float, use_params: bool) -> np.ndarray:
        """Common offset t per row so the relaxed FLOPs (or params) ratio of clip(base + t) is target."""
        r_max = self.space.r_max
        lo = -base.max(1)
        hi = r_max - base.min(1)
        for _ in range(BISECT_INNER):
            mid = 0.5 * (lo + hi)
            f, p = self._relaxed(np.clip(base + mid[:, None], 0.0, r_max))
            high = (p if use_params else f) > target  # too much left: prune more
            lo = np.where(high, mid, lo)
            hi = np.where(high, hi, mid)
        return 0.5 * (lo + hi)

    def _primary(self) -> tuple[float, bool]:
        f, p = self._targets()
        return (f, False) if f is not None else (p, True)  # type: ignore[return-value]

    def _solve_two(self, r0: np.ndarray) -> np.ndarray:
        """Offsets (t, s) on clip(r0 + t + s·d) for FLOPs and params (or mCB) targets."""
        s_cfg, r_max = self.space, self.space.r_max
        mcb = s_cfg.c_mcb is not None
        goal = s_cfg.c_mcb if mcb else s_cfg.c_params

        def second(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            base = r0 + s[:, None] * self._d
            t = self._solve_offset(base, s_cfg.c_flops, False)  # type: ignore[arg-type]
            r = np.clip(base + t[:, None], 0.0, r_max)
            f, p = self._relaxed(r)
            return (f / p if mcb else p), r

        m = len(r0)
        lo, hi = np.full(m, -self._s_max), np.full(m, self._s_max)
        h_lo, r_lo = second(lo)
        h_hi, r_hi = second(hi)
        rising = h_hi >= h_lo
        # clamp rows whose goal lies outside [h(-S), h(S)] to the nearer end
        below = np.where(rising, goal <= h_lo, goal <= h_hi)
        above = np.where(rising, goal >= h_hi, goal >= h_lo)
        for _ in range(BISECT_OUTER):
            mid = 0.5 * (lo + hi)
            h, _ = second(mid)
            up = (h < goal) == rising  # move s toward larger h
            lo = np.where(up, mid, lo)
            hi = np.where(up, hi, mid)
        _, r = second(0.5 * (lo + hi))
        end_low = np.where(rising, r_lo.T, r_hi.T).T
        end_high = np.where(rising, r_hi.T, r_lo.T).T
        r = np.where(below[:, None], end_low, r)
        return np.where(above[:, None], end_high, r)

    def _solve_std(self, z: np.ndarray) -> np.ndarray:
        """Offset u and scale σ ≥ c_std so that std(clip(u + σz)) = c_std at the band's centre."""
        s_cfg, r_max = self.space, self.space.r_max
        target, use_params = self._primary()
        goal = s_cfg.c_std

        def at(sigma: np.ndarray) -> np.ndarray:
            base = sigma[:, None] * z
            u = self._solve_offset(base, target, use_params)
            return np.clip(base + u[:, None], 0.0, r_max)

        m = len(z)
        r = at(np.full(m, goal))
        short = r.std(1) < goal * (1 - 1e-6)  # clipping ate some spread: widen σ
        if short.any():
            zs = z[short]
            lo, hi = np.full(len(zs), goal), np.full(len(zs), goal * 8.0 + r_max)

            def at_short(sigma: np.ndarray) -> np.ndarray:
                base = sigma[:, None] * zs
                u = self._solve_offset(base, target, use_params)
                return np.clip(base + u[:, None], 0.0, r_max)

            for _ in range(BISECT_OUTER):
                mid = 0.5 * (lo + hi)
                small = at_short(mid).std(1) < goal
                lo = np.where(small, mid, lo)
                hi = np.where(small, hi, mid)
            r[short] = at_short(0.5 * (lo + hi))
        return r

    def _continuous(self, genotypes: np.ndarray, blend: float) -> np.ndarray:
        """Map genotypes (blended toward the neutral point) to relaxed in-band recipes."""
        s_cfg, r_max = self.space, self.space.r_max
        g = 0.5 + blend * (genotypes - 0.5)
        if s_cfg.kind == "std":
            z = ndtri(np.clip(g, 1e-6, 1 - 1e-6))
            z = z - z.mean(1, keepdims=True)
            spread = z.std(1, keepdims=True)
            z = np.where(spread > 1e-9, z / np.maximum(spread, 1e-12), 0.0)
            z = blend * z + (1 - blend) * self._z_neutral
            z = (z - z.mean(1, keepdims=True))
            spread = z.std(1, keepdims=True)
            z = np.where(spread > 1e-9, z / np.maximum(spread, 1e-12), self._z_neutral)
            return self._solve_std(z)
        r0 = r_max * g
        if s_cfg.kind in ("mcb", "flops+params"):
            return self._solve_two(r0)
        target, use_params = self._primary()
        t = self._solve_offset(r0, target, use_params)
        return np.clip(r0 + t[:, None], 0.0, r_max)

    # -------------------------------------------------------------------- discrete repair
    def _ratios_for(self, kept: np.ndarray, near: np.ndarray) -> np.ndarray:
        """Ratios in [0, r_max] that keep `kept` channels, each as near to `near` as it can be."""
        c, rt, r_max = self._c, self.space.round_to, self.space.r_max
        centre = 1.0 - kept / c
        half = 0.45 * rt / c
        r = np.clip(np.clip(near, centre - half, centre + half), 0.0, r_max)
        fallback = np.where(kept == self.cost.channels, 0.0,
                            np.where(kept == self._kmin, r_max, np.clip(centre, 0.0, r_max)))
        return np.where(kept_channels(self.cost.channels, r, rt) == kept, r, fallback)

    def _repair(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy one-step moves of single units, on the exact cost, for many recipes at once.

        Each round tries, for every unpaired row, each unit one rounding step up and down, and
        takes the move that lowers the band violation most (ties: the smallest ratio change).
        Returns the repaired recipes and which rows ended inside every band.
        """
        r = r.copy()
        c, rt, n = self.cost.channels, self.space.round_to, self.n
        kept = kept_channels(c, r, rt)
        v = self.violation(kept, r)
        active = v > 0
        diag = np.arange(n)
        for _ in range(4 * n + 8):
            rows = np.flatnonzero(active)
            if not len(rows):
                break
            k, rr, m = kept[rows], r[rows], len(rows)
            up = np.minimum((k // rt + 1) * rt, c)
            down = np.maximum((k - 1) // rt * rt, self._kmin)
            steps_k = np.concatenate([up, down], axis=1)  # (m, 2N): the moved unit's new width
            steps_r = np.concatenate([self._ratios_for(up, rr), self._ratios_for(down, rr)], 1)
            cand_k = np.repeat(k[:, None, :], 2 * n, axis=1)
            cand_r = np.repeat(rr[:, None, :], 2 * n, axis=1)
            cand_k[:, diag, diag] = up
            cand_k[:, n + diag, diag] = down
            cand_r[:, diag, diag] = steps_r[:, :n]
            cand_r[:, n + diag, diag] = steps_r[:, n:]
            vs = self.violation(cand_k.reshape(-1, n), cand_r.reshape(-1, n)).reshape(m, 2 * n)
            vs[steps_k == np.concatenate([k, k], axis=1)] = np.inf  # no step possible there
            best_v = vs.min(1)
            moved = np.abs(steps_r - np.concatenate([rr, rr], axis=1))
            best = np.where(vs <= best_v[:, None] + 1e-12, moved, np.inf).argmin(1)
            better = best_v < v[rows]
            take = rows[better]
            kept[take] = cand_k[better, best[better]]
            r[take] = cand_r[better, best[better]]
            v[take] = best_v[better]
            active[rows[~better]] = False
            active[take] = v[take] > 0
        return r, v == 0

    # ------------------------------------------------------------------------ public
    def decode(self, genotypes: np.ndarray) -> Decoded:
        """Decode a batch of genotypes (M, N) in [0, 1] into in-band recipes (deterministic)."""
        g = np.atleast_2d(np.asarray(genotypes, dtype=np.float64))
        if g.shape[1] != self.n:
            raise EvopruneError(f"a genotype has {g.shape[1]} genes but the space has {self.n} units")
        if not np.isfinite(g).all():
            raise EvopruneError("a genotype holds NaN or inf")
        g = np.clip(g, 0.0, 1.0)
        out = np.empty_like(g)
        todo = np.arange(len(g))
        for blend in BLENDS:
            if not len(todo):
                break
            r, inside = self._repair(self._continuous(g[todo], blend))
            out[todo[inside]] = r[inside]
            todo = todo[~inside]
        if len(todo):  # unreachable after binding: the neutral genotype decoded there
            raise EvopruneError(f"{len(todo)} genotype(s) could not be repaired into the space")
        return self.describe(out)

    def describe(self, recipes: np.ndarray) -> Decoded:
        """Exact figures of recipes (M, N): kept channels, ratios, mCB, std, band membership."""
        kept = kept_channels(self.cost.channels, recipes, self.space.round_to)
        flops, params = self.cost.batch(kept)
        f, p = flops / self.cost.base_flops, params / self.cost.base_params
        return Decoded(recipes, kept, f, p, f / p, recipes.std(1), self.violation(kept, recipes) == 0)

    def sample(self, n: int, seed: int = 0) -> Decoded:
        """Draw n i.i.d. recipes: uniform genotypes decoded into the space."""
        if n < 1:
            raise EvopruneError(f"n must be at least 1, got {n}")
        return self.decode(np.random.default_rng(seed).random((n, self.n)))

    def uniform(self) -> Decoded:
        """The uniform recipe of the FLOPs (or params) band: the baseline every study includes.

        One ratio for every unit, then the fewest single-unit rounding steps into the band; in an
        mCB or STD space it keeps the same FLOPs budget but not the mCB or STD constraint.
        """
        target, use_params = self._primary()
        band_only = PruningSpace(
            c_flops=None if use_params else target, c_params=target if use_params else None,
            delta=self.space.delta, r_max=self.space.r_max, round_to=self.space.round_to)
        return Decoder(band_only, self.cost).decode(np.full((1, self.n), 0.5))

    def reject_sample(self, n: int, seed: int = 0, max_draws: int = 10_000_000,
                      batch: int = 4096) -> tuple[Decoded, int]:
        """The paper's/EagleEye's sampler: uniform ratios in [0, R], keep those in the band.

        Kept only as the reference the benchmark compares against. Returns (accepted, draws).
        """
        rng = np.random.default_rng(seed)
        accepted: list[np.ndarray] = []
        draws = 0
        while sum(len(a) for a in accepted) < n and draws < max_draws:
            r = rng.uniform(0.0, self.space.r_max, (batch, self.n))
            draws += batch
            kept = kept_channels(self.cost.channels, r, self.space.round_to)
            accepted.append(r[self.violation(kept, r) == 0])
        recipes = np.concatenate(accepted)[:n] if accepted else np.empty((0, self.n))
        return self.describe(recipes), draws

    # ------------------------------------------------------------------ binding checks
    def _check_reachable(self) -> None:
        """Refuse a space no recipe reaches, saying what range is reachable."""
        s, cost = self.space, self.cost
        f_min = cost.of_channels(self._kmin)
        hint = ""
        if not cost.units.residual and any(u.kind == "internal" for u in cost.units):
            hint = ("; block-internal units alone cannot go lower: search the residual-coupled "
                    "groups too (--residual)")
        for name, goal, low in (("c_flops", s.c_flops, f_min.flops_ratio),
                                ("c_params", s.c_params, f_min.params_ratio)):
            if goal is not None and goal + s.delta < low:
                raise EvopruneError(
                    f"{name} {goal:g} is unreachable: with every unit at r_max {s.r_max:g} the "
                    f"model keeps {low:.4f}; reachable {name} is [{low:.4f}, 1]{hint}")
        reach = self._reachable_text()
        if s.c_mcb is not None or (s.c_params is not None and s.c_flops is not None):
            lo, hi = self._second_range()
            goal, tol = (s.c_mcb, s.mcb_tol) if s.c_mcb is not None else (s.c_params, s.delta)
            if not lo - tol <= goal <= hi + tol:
                raise EvopruneError(f"the {s.label} space {self.space.bands()} is unreachable: {reach}")
        neutral = np.full((1, self.n), 0.5)
        if not self._repair(self._continuous(neutral, 0.0))[1][0]:
            raise EvopruneError(f"no recipe lies in the {s.label} space {self.space.bands()}: {reach}")

    def _reachable_text(self) -> str:
        """Say what the constrained quantity can reach at this band (for refusals)."""
        s = self.space
        if s.c_std is not None:
            return f"the largest recipe std reachable there is about {self._max_std():.4f}"
        if s.c_mcb is not None or (s.c_params is not None and s.c_flops is not None):
            lo, hi = self._second_range()
            name = "mCB" if s.c_mcb is not None else "c_params"
            return f"at c_flops {s.c_flops:g} the reachable {name} is about [{lo:.3f}, {hi:.3f}]"
        return "the band cannot be met after channel rounding (widen --delta)"

    def _second_range(self) -> tuple[float, float]:
        """mCB (or params ratio) at the band's FLOPs with the second offset at its two ends."""
        r0 = np.full((2, self.n), 0.5 * self.space.r_max)
        s = np.array([-self._s_max, self._s_max])
        base = r0 + s[:, None] * self._d
        t = self._solve_offset(base, self.space.c_flops, False)  # type: ignore[arg-type]
        f, p = self._relaxed(np.clip(base + t[:, None], 0.0, self.space.r_max))
        values = f / p if self.space.c_mcb is not None else p
        return float(values.min()), float(values.max())

    def _max_std(self) -> float:
        target, use_params = self._primary()
        base = 8.0 * self._z_neutral[None]
        u = self._solve_offset(base, target, use_params)
        return float(np.clip(base + u[:, None], 0.0, self.space.r_max).std())


def throughput(decoder: Decoder, n: int, seed: int = 0) -> tuple[Decoded, float]:
    """Decode n uniform genotypes in one batch; return them and valid recipes per second."""
    start = time.perf_counter()
    out = decoder.sample(n, seed)
    return out, int(out.inside.sum()) / (time.perf_counter() - start)
