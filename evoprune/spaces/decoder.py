"""The decoder: a pruning space bound to one model's cost model, mapping genotypes to recipes."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from evoprune.cost import CostModel
from evoprune.errors import EvopruneError
from evoprune.spaces.bands import bind, check_reachable
from evoprune.spaces.repair import repair
from evoprune.spaces.solvers import continuous
from evoprune.spaces.space import PruningSpace
from evoprune.units import kept_channels

BLENDS = (1.0, 0.75, 0.5, 0.25, 0.0)  # fallbacks toward the neutral genotype


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

    def violation(self, kept: np.ndarray, recipes: np.ndarray) -> np.ndarray:
        """Sum of band overshoots, each in units of its half-width (0 = inside every band)."""
        return self.bound.violation(kept, recipes)

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
            r, inside = repair(self.bound, continuous(self.bound, g[todo], blend))
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
        target, use_params = self.bound.target, self.bound.use_params
        band_only = PruningSpace(
            c_flops=None if use_params else target, c_params=target if use_params else None,
            delta=self.space.delta, r_max=self.space.r_max, round_to=self.space.round_to)
        return Decoder(band_only, self.cost).decode(np.full((1, self.n), 0.5))
