"""Coverage of torchvision's classification CNNs: units, exact cost, pruned run, round trip, decode.

One model per family runs in CI (`tests/test_coverage.py`); `evoprune bench coverage` prints the
table the README quotes (seconds to find the units at 224×224 on the machine it names).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FAMILIES: dict[str, tuple[str, ...]] = {  # the first model of a family is the one CI checks
    "resnet": ("resnet18", "resnet50"),
    "resnext": ("resnext50_32x4d",),
    "wide_resnet": ("wide_resnet50_2",),
    "vgg": ("vgg11_bn", "vgg11"),
    "alexnet": ("alexnet",),
    "densenet": ("densenet121",),
    "squeezenet": ("squeezenet1_1", "squeezenet1_0"),
    "googlenet": ("googlenet",),
    "inception": ("inception_v3",),
    "shufflenet_v2": ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0"),
    "mobilenet_v2": ("mobilenet_v2",),
    "mobilenet_v3": ("mobilenet_v3_small", "mobilenet_v3_large"),
    "mnasnet": ("mnasnet0_5", "mnasnet1_0"),
    "efficientnet": ("efficientnet_b0",),
    "efficientnet_v2": ("efficientnet_v2_s",),
    "regnet": ("regnet_x_400mf", "regnet_y_400mf"),
    "convnext": ("convnext_tiny",),
}
SMALLEST = {"alexnet": 63, "inception_v3": 75}  # the rest run at 32×32
NOT_FILTER_PRUNING = {  # torchvision classification families evoprune refuses, and why
    "vit": "vision transformer: attention heads and tokens, not convolution filters",
    "swin": "vision transformer (shifted windows): not convolution filters",
    "maxvit": "hybrid transformer: its attention blocks are not filter pruning",
}
C_FLOPS = 0.5  # the decode check's FLOPs band centre


@dataclass(frozen=True)
class Coverage:
    """What one model's check found (all figures exact integers or booleans)."""

    family: str
    model: str
    size: int
    units: int
    grouped_units: int  # units that remove whole groups of a grouped conv
    left_out: int  # channel groups left as they are (each with a reason)
    reasons: tuple[str, ...]
    flops: int  # analytic, for a random recipe
    measured_flops: int  # FlopCounterMode on the pruned model
    params: int
    measured_params: int
    runs: bool  # the pruned model's output is (2, classes) and finite
    round_trip: bool  # save_pruned/load_pruned (weights_only) give the same outputs
    in_band: bool  # decoded recipes of a FLOPs-band space all land in the band
    unit_seconds: float  # find_units at this size

    @property
    def exact(self) -> bool:
        """Analytic FLOPs and params equal the measured ones."""
        return self.flops == self.measured_flops and self.params == self.measured_params

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return self.exact and self.runs and self.round_trip and self.in_band and self.units > 0

    def to_dict(self) -> dict[str, Any]:
        """Return the row as plain data, with `exact` and `ok`."""
        return {**asdict(self), "exact": self.exact, "ok": self.ok}


def family_of(name: str) -> str:
    """Return the family a torchvision model name belongs to ('' when none is listed)."""
    return next((f for f, names in FAMILIES.items() if name in names), "")


def check_model(name: str, size: int = 32, *, classes: int = 10, seed: int = 0) -> Coverage:
    """Run every coverage check on torchvision model `name` at size×size (or its smallest)."""
    from evoprune.cost import CostModel, flops_of, params_of
    from evoprune.models import build_model
    from evoprune.pruning import PrunedSpec, load_pruned, prune_channels, save_pruned
    from evoprune.spaces import Decoder, PruningSpace
    from evoprune.units import find_units

    size = max(size, SMALLEST.get(name, 32))
    shape = (3, size, size)
    spec_name = f"torchvision:{name}"
    model = build_model(spec_name, classes, shape).eval()
    start = time.perf_counter()
    units = find_units(model, shape, residual=True)
    seconds = time.perf_counter() - start
    cost = CostModel(model, units)
    rng = np.random.default_rng(seed)
    recipe = rng.uniform(0.0, 0.7, len(units))
    kept = cost.kept(recipe)
    analytic = cost.of_channels(kept)
    pruned = prune_channels(model, units, kept).eval()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = pruned(x)
    runs = tuple(y.shape) == (2, classes) and bool(torch.isfinite(y).all())
    spec = PrunedSpec(spec_name, classes, shape, True, tuple(units.names),
                      tuple(int(c) for c in units.channels), tuple(int(k) for k in kept),
                      tuple(float(r) for r in recipe))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pruned.pt"
        save_pruned(path, pruned, spec)
        back = load_pruned(path).eval()
        with torch.no_grad():
            round_trip = bool(torch.allclose(back(x), y, atol=1e-5, rtol=1e-4))
    space = PruningSpace(c_flops=C_FLOPS)
    decoder = Decoder(space, cost)
    decoded = decoder.decode(rng.uniform(size=(4, decoder.n_genes)))
    in_band = bool(decoded.inside.all() and
                   (np.abs(decoded.flops_ratio - C_FLOPS) <= space.delta + 1e-12).all())
    return Coverage(family_of(name), name, size, len(units), int((units.steps > 1).sum()),
                    len(units.left_out), tuple(sorted({why for _, why in units.left_out})),
                    analytic.flops, flops_of(pruned, shape), analytic.params, params_of(pruned),
                    runs, round_trip, in_band, seconds)


def coverage_table(models: Sequence[str] | None = None, *, size: int = 224) -> list[dict[str, Any]]:
    """Check `models` (default: the first of every family) at `size`; rows as plain data."""
    names = list(models) if models else [names[0] for names in FAMILIES.values()]
    return [check_model(name, size).to_dict() for name in names]


def format_coverage(rows: list[dict[str, Any]]) -> str:
    """Render coverage rows as a markdown table with the machine line."""
    from evoprune.machine import machine

    lines = [f"machine: {machine()}", "",
             "| family | model | input | units (grouped) | left out | cost exact | runs, "
             "round trip, in band | find units |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        checks = "yes" if r["runs"] and r["round_trip"] and r["in_band"] else "NO"
        lines.append(f"| {r['family']} | {r['model']} | {r['size']}×{r['size']} | {r['units']}"
                     f" ({r['grouped_units']}) | {r['left_out']} | "
                     f"{'yes' if r['exact'] else 'NO'} | {checks} | {r['unit_seconds']:.1f} s |")
    reasons = sorted({why for r in rows for why in r["reasons"]})
    if reasons:
        lines += ["", "left out: " + "; ".join(reasons)]
    lines += ["", "not covered (refused with one line): " +
              "; ".join(f"{k}: {v}" for k, v in NOT_FILTER_PRUNING.items())]
    return "\n".join(lines)
