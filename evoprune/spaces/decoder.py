"""The decoder: a pruning space bound to one model's cost model, mapping genotypes to recipes."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.units import kept_channels
from evoprune.spaces.bands import bind, check_reachable
from evoprune.spaces.repair import repair
from evoprune.spaces.sampling import Sampler
from evoprune.spaces.solvers import continuous, solve_offset
from evoprune.spaces.space import PruningSpace

BLENDS = (1.0, 0.75, 0.5, 0.25, 0.0)  # fallbacks toward the neutral genotype (all genes 0.5)


class Decoded(NamedTuple):
    """A batch of decoded recipes with their exact figures (one row per genotype)."""

    recipes: np.ndarray  # (M, N) ratios in [0, r_max]
    kept: np.ndarray  # (M, N) kept channels (what `prune` keeps for these ratios)
    flops_ratio: np.ndarray
    params_ratio: np.ndarray
    mcb: np.ndarray
    std: np.ndarray
    inside: np.ndarray  # every band holds (True for every row a bound Decoder returns)


class Decoder:
    """A pruning space bound to one model's cost model: decode, sample, uniform baseline."""

    def __init__(self, space: PruningSpace, cost: CostModel) -> None:
        """Bind the space; refuse it here, with the reachable range, if no recipe lies in it."""
        self.space = space
        self.cost = cost
        self.bound = bind(space, cost)
        self.n = self.bound.n
        check_reachable(self.bound)
        self._sampler: Sampler | None = None

    @property
    def n_genes(self) -> int:
        """Genes of a genotype: one per unit, plus the FLOPs target's gene in a budget range."""
        return self.bound.n_genes

    def violation(self, kept: np.ndarray, recipes: np.ndarray) -> np.ndarray:
        """Sum of band overshoots, each in units of its half-width (0 = inside every band)."""
        return self.bound.violation(kept, recipes)

    def decode(self, genotypes: np.ndarray) -> Decoded:
        """Decode a batch of genotypes (M, n_genes) in [0, 1] into in-band recipes (deterministic).

        STD spaces: a uniform ratio plus c_std·Φ⁻¹(g), shifted into the band; the others: each
        ratio the g-quantile of a tilted uniform law on [0, r_max] (see `solvers`); then the exact
        repair. In a budget range the last gene picks the FLOPs target in [c_flops, c_flops_max].
        """
        g = np.atleast_2d(np.asarray(genotypes, dtype=np.float64))
        if g.shape[1] != self.n_genes:
            extra = " and 1 FLOPs target gene" if self.n_genes > self.n else ""
            raise EvopruneError(f"a genotype has {g.shape[1]} genes but the space takes "
                                f"{self.n_genes} ({self.n} units{extra})")
        if not np.isfinite(g).all():
            raise EvopruneError("a genotype holds NaN or inf")
        g = np.clip(g, 0.0, 1.0)
        out = np.empty((len(g), self.n))
        todo = np.arange(len(g))
        for blend in BLENDS:
            if not len(todo):
                break
            r, inside = repair(self.bound, continuous(self.bound, g[todo], blend))
            out[todo[inside]] = r[inside]
            todo = todo[~inside]
        if len(todo):  # unreachable after binding: the neutral genotype decoded there
            raise EvopruneError(f"{len(todo)} genotype(s) could not be repaired into the space")
        return self.describe(out)

    def describe(self, recipes: np.ndarray) -> Decoded:
        """Exact figures of recipes (M, N): kept channels, ratios, mCB, std, band membership."""
        kept = kept_channels(self.cost.channels, recipes, self.cost.rounding(self.space.round_to))
        flops, params = self.cost.batch(kept)
        f, p = flops / self.cost.base_flops, params / self.cost.base_params
        mcb = flops / params / (self.cost.base_flops / self.cost.base_params)  # as `Cost.mcb`
        return Decoded(recipes, kept, f, p, mcb, recipes.std(1), self.violation(kept, recipes) == 0)

    def describe_kept(self, kept: np.ndarray) -> Decoded:
        """Exact figures of kept-channel rows (M, N); each ratio 1 - k/c, or r_max where that
        rounds to the same k (so a ratio exceeds r_max only where no ratio within it keeps k)."""
        kept = np.asarray(kept, dtype=np.int64)
        if kept.ndim != 2 or kept.shape[1] != self.n:
            raise EvopruneError(f"kept channels must have {self.n} columns, got shape {kept.shape}")
        if (kept < 1).any() or (kept > self.cost.channels).any():
            raise EvopruneError("kept channels must be between 1 and each unit's channels")
        exact = 1.0 - kept / self.cost.channels
        capped = np.minimum(exact, self.space.r_max)
        rounding = self.cost.rounding(self.space.round_to)
        same = kept_channels(self.cost.channels, capped, rounding) == kept
        return self.describe(np.where(same, capped, exact))

    def sample(self, n: int, seed: int = 0) -> Decoded:
        """Draw n i.i.d. recipes from the space's distribution (deterministic given seed).

        STD spaces: uniform genotypes decoded (the uniform ratio plus N(0, c_std²) numbers; in a
        range, the FLOPs target uniform in it). The others: the paper's initial space restricted
        to the bands (ratios uniform on [0, r_max]^N, kept when every band holds after rounding),
        by rejection where a pilot batch says it is cheap, else by the Gibbs sampler of `sampling`.
        """
        if n < 1:
            raise EvopruneError(f"n must be at least 1, got {n}")
        if self.space.kind == "std":
            return self.decode(np.random.default_rng(seed).random((n, self.n_genes)))

        def starts(rng: np.random.Generator, m: int) -> np.ndarray:
            return self.decode(rng.random((m, self.n_genes))).recipes

        return self.describe(self.sampler.draw(n, seed, starts))

    @property
    def sampler(self) -> Sampler:
        """The space's rejection and Gibbs sampler (built on first use)."""
        if self._sampler is None:
            self._sampler = Sampler(self.bound)
        return self._sampler

    def uniform(self) -> Decoded:
        """The uniform recipe of the FLOPs (or params) band: the baseline every study includes.

        One ratio for every unit, then the fewest single-unit rounding steps into the band (a
        range's midpoint ± delta); in an mCB or STD space it keeps the same FLOPs budget but not
        the mCB constraint.
        """
        target, use_params = self.bound.target, self.bound.use_params
        band_only = PruningSpace(
            c_flops=None if use_params else target, c_params=target if use_params else None,
            delta=self.space.delta, r_max=self.space.r_max, round_to=self.space.round_to)
        flat = Decoder(band_only, self.cost)
        u = solve_offset(flat.bound, np.zeros((1, self.n)), target, use_params)
        r, inside = repair(flat.bound, np.clip(np.tile(u[:, None], self.n), 0, flat.space.r_max))
        if not inside[0]:
            raise EvopruneError(f"the uniform recipe cannot be repaired into {band_only.bands()}")
        return flat.describe(r)
