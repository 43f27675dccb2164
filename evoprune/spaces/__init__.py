"""Pruning spaces (Sec. 3 of the paper): bands on FLOPs, params, mCB and recipe STD.

A `PruningSpace` is the frozen configuration; `Decoder` binds it to a model's cost model and maps
any genotype g in [0, 1]^N (one static float per unit, as an optimizer proposes) to a recipe
inside every band *after channel rounding*, by construction rather than rejection. The parts:

- `space.py`: `PruningSpace`, the configuration and its validation (no torch);
- `bands.py`: the space bound to a cost model, band targets, the violation, reachability checks;
- `solvers.py`: a base recipe r0 = R·g (STD: z = Φ⁻¹(g)), then bisections on the relaxed cost: a
  common offset t for the FLOPs (or params) band, a second offset s along d (each unit's
  standardised log FLOPs-per-param) for mCB or FLOPs+params bands, the scale σ of z for STD;
- `repair.py`: greedy single-unit rounding steps on the exact integer cost into every band;
- `decoder.py`: `Decoder` (decode, describe, sample, uniform) and `Decoded`.

A genotype whose repair fails (rare: an extreme corner of the box) is blended toward the
neutral genotype until it succeeds; the neutral genotype is decoded when the space is bound, so
a space that binds decodes every genotype, and an unreachable space is refused up front with
the reachable range in the message. `Decoder` and `Decoded` load on first use, so importing
`PruningSpace` does not import torch.
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
