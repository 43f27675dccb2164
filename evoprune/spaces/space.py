"""The pruning-space configuration: bands on FLOPs, params, mCB and the STD perturbation (torch-free)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from evoprune.errors import EvopruneError


@dataclass(frozen=True)
class PruningSpace:
    """A pruning space: FLOPs and/or params bands, optionally an mCB or STD constraint."""

    c_flops: float | None = None
    delta: float = 0.002
    c_params: float | None = None
    c_mcb: float | None = None
    mcb_tol: float = 0.1
    c_std: float | None = None  # STD-x: ratios uniform + N(0, x²) perturbations, then the band
    r_max: float = 0.95
    round_to: int = 1
    c_flops_max: float | None = None  # a range: FLOPs band [c_flops - delta, c_flops_max + delta]

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
              "a pruning space needs `c_flops` or `c_params`")
        check(math.isfinite(self.delta) and 0 < self.delta < 0.5, f"delta must be in (0, 0.5), got {self.delta}")
        check(math.isfinite(self.r_max) and 0 < self.r_max < 1, f"r_max must be in (0, 1), got {self.r_max}")
        check(isinstance(self.round_to, int) and self.round_to >= 1,
              f"round_to must be a positive integer, got {self.round_to}")
        if self.c_mcb is not None:
            check(math.isfinite(self.c_mcb) and self.c_mcb > 0, f"c_mcb must be positive, got {self.c_mcb}")
            check(math.isfinite(self.mcb_tol) and 0 < self.mcb_tol < self.c_mcb,
                  f"mcb_tol must be in (0, c_mcb), got {self.mcb_tol}")
            check(self.c_flops is not None, "an mCB space needs `c_flops` (mCB fixes params from it)")
            check(self.c_params is None and self.c_std is None,
                  "give one of `c_mcb`, `c_std` and `c_params`, not several")
        if self.c_std is not None:
            check(math.isfinite(self.c_std) and 0 < self.c_std <= self.r_max / 2,
                  f"c_std must be in (0, r_max/2 = {self.r_max / 2}], got {self.c_std}")
            check(self.c_flops is None or self.c_params is None,
                  "an STD space takes one band: `c_flops` or `c_params`, not both")
        if self.c_flops_max is not None:
            self._check_range(check)

    def _check_range(self, check: Callable[[bool, str], None]) -> None:
        """Refuse a budget range that is empty, above 1 or combined with a second band."""
        hi = self.c_flops_max
        check(self.c_flops is not None, "a FLOPs range needs `c_flops` (its lower end)")
        check(math.isfinite(hi) and self.c_flops < hi <= 1,  # type: ignore[operator, arg-type]
              f"c_flops_max must be in (c_flops = {self.c_flops}, 1], got {hi}")
        check(self.c_mcb is None and self.c_params is None,
              "a FLOPs range takes no `c_mcb` or `c_params` band (yet): give a single c_flops")

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
        if self.c_flops_max is not None:
            parts.append(f"FLOPs {self.c_flops:g}–{self.c_flops_max:g} ±{self.delta:g}")
        elif self.c_flops is not None:
            parts.append(f"FLOPs {self.c_flops:g}±{self.delta:g}")
        if self.c_params is not None:
            parts.append(f"params {self.c_params:g}±{self.delta:g}")
        if self.c_mcb is not None:
            parts.append(f"mCB {self.c_mcb:g}±{self.mcb_tol:g}")
        if self.c_std is not None:
            parts.append(f"perturbation σ {self.c_std:g}")
        return f"({', '.join(parts)}, r_max {self.r_max:g}, round_to {self.round_to})"

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data (a study's `space` attr)."""
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningSpace:
        """Rebuild a space from `to_dict` data, ignoring `kind` and retired fields (std_tol)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
