"""Pruning spaces (Sec. 3 of the paper): bands on FLOPs (or a FLOPs range), params, mCB; STD-x.

A `PruningSpace` is the frozen configuration; `Decoder` binds it to a model's cost model and maps
any genotype g in [0, 1]^n_genes (one static float per unit, as an optimizer proposes, plus one
picking the FLOPs target in a budget range) to a recipe inside every band *after channel
rounding*, by construction rather than rejection; `Decoder.sample` draws i.i.d. recipes from the
space's own distribution. The parts:

- `space.py`: `PruningSpace`, the configuration and its validation (no torch);
- `bands.py`: the space bound to a cost model, band targets, the violation, refusals;
- `reach.py`: whether any recipe lies in the bands: witnesses (exact enumeration of small
  spaces, repair from the neutral and many other starts) or a proof of emptiness (interval and
  McCormick-LP bounds in a branch and bound); a space is refused only with a proof;
- `solvers.py`: the continuous maps: STD-x is a uniform ratio plus x·Φ⁻¹(g) shifted into the
  band (the paper's construction); the other spaces map each gene to a quantile of a tilted
  uniform law on [0, r_max], the tilt solved per row into the band (mean-field weights);
- `repair.py`: greedy single-unit rounding steps on the exact integer cost into every band, then
  a walk toward the nearest witness (anchor) for a row the steps leave outside;
- `sampling.py`: the paper's initial space restricted to the bands, by rejection or by an exact
  Gibbs sampler (pair and flow steps on the kept-channel levels);
- `decoder.py`: `Decoder` (decode, describe, sample, uniform, n_genes) and `Decoded`.

A space with a witness decodes every genotype (the repair walks toward the nearest witness,
the witness itself at worst); a space proven empty is refused up front with the reachable range
in the message, and one neither witnessed nor proven empty (budgets spent: not seen on the zoo)
is accepted with a warning. `Decoder` and `Decoded` load on first use, so importing
`PruningSpace` does not import torch.

May import: `evoprune.network`, `evoprune.core`, `evoprune.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evoprune.spaces.space import PruningSpace

if TYPE_CHECKING:
    from evoprune.spaces.decoder import Decoded, Decoder

__all__ = ["Decoded", "Decoder", "PruningSpace"]


def __getattr__(name: str) -> Any:
    """Load `Decoder` and `Decoded` (torch, through the cost model) on first use."""
    if name in ("Decoder", "Decoded"):
        from evoprune.spaces import decoder

        return getattr(decoder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
