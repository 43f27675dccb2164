"""Coverage of torchvision's and timm's CNNs: units, exact cost, pruned run, round trip, decode.

One torchvision model per family runs in CI (`tests/test_coverage.py`); timm's families, an
optional extra, run in `tests/test_timm.py` when timm is installed. `evoprune bench coverage`
(`--zoo timm`) prints the table the README quotes (seconds to find the units on the machine it
names). A model the checks cannot cover is a row with the one line evoprune refuses it with.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evoprune.core.machine import machine
from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel, flops_of, params_of
from evoprune.network.models import build_model
from evoprune.network.pruning import PrunedSpec, load_pruned, prune_channels, save_pruned
from evoprune.network.units import find_units
from evoprune.spaces import Decoder, PruningSpace

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

TIMM_FAMILIES: dict[str, str] = {  # timm's CNN families at 64×64 (random weights): one model each
    "resnet": "resnet18", "seresnet": "seresnet18", "ecaresnet": "ecaresnet26t",
    "skresnet": "skresnet18", "res2net": "res2net50_14w_8s", "resnest": "resnest14d",
    "byobnet (resnext_ts)": "resnext26ts", "regnetx": "regnetx_002", "regnety": "regnety_002",
    "regnetz": "regnetz_b16", "densenet": "densenet121", "dla": "dla34", "dpn": "dpn48b",
    "vovnet": "ese_vovnet19b_dw", "cspnet": "cspresnet50", "cs3darknet": "cs3darknet_focus_s",
    "darknet": "darknet17", "efficientnet": "efficientnet_b0",
    "efficientnetv2": "efficientnetv2_rw_t", "mobilenetv2": "mobilenetv2_050",
    "mobilenetv3": "mobilenetv3_small_050", "mobilenetv4": "mobilenetv4_conv_small",
    "mnasnet": "mnasnet_050", "fbnet": "fbnetc_100", "spnasnet": "spnasnet_100",
    "tinynet": "tinynet_e", "lcnet": "lcnet_050", "mixnet": "mixnet_s",
    "ghostnet": "ghostnet_100", "rexnet": "rexnet_100", "hrnet": "hrnet_w18_small",
    "convnext": "convnext_atto", "convnextv2": "convnextv2_atto", "nfnet": "nf_resnet26",
    "repvgg": "repvgg_a0", "mobileone": "mobileone_s0", "hgnet": "hgnet_tiny",
    "inception_v3": "inception_v3", "xception": "xception41", "selecsls": "selecsls42b",
    "gernet": "gernet_s", "repghost": "repghostnet_050", "vgg": "vgg11_bn",
    "tresnet": "tresnet_m", "resnetv2": "resnetv2_50",
}
TIMM_SIZE = 64  # the input side timm's matrix runs at (each model's smallest if larger)
TIMM_SMALLEST = {"inception_v3": 75}


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
    band_exact: bool = True  # a decoded in-band recipe's analytic cost equals the measured one
    default_units: int = -1  # units without residual groups (-1: not counted; 0: refused)

    @property
    def exact(self) -> bool:
        """Analytic FLOPs and params equal the measured ones."""
        return self.flops == self.measured_flops and self.params == self.measured_params

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return (self.exact and self.band_exact and self.runs and self.round_trip and self.in_band
                and self.units > 0)

    def to_dict(self) -> dict[str, Any]:
        """Return the row as plain data, with `exact` and `ok`."""
        return {**asdict(self), "exact": self.exact, "ok": self.ok}


def family_of(name: str) -> str:
    """Return the family a torchvision or `timm:` model name belongs to ('' when none is listed)."""
    if name.startswith("timm:"):
        return next((f for f, n in TIMM_FAMILIES.items() if f"timm:{n}" == name), "")
    return next((f for f, names in FAMILIES.items() if name in names), "")


def check_model(name: str, size: int = 32, *, classes: int = 10, seed: int = 0,
                default_units: bool = False) -> Coverage:
    """Run every coverage check on torchvision model `name` (or `timm:NAME`) at size×size.

    The units include the residual groups; `default_units` also counts the units found without
    them (0 when find_units refuses the model then).
    """

    timm = name.startswith("timm:")
    size = max(size, (TIMM_SMALLEST if timm else SMALLEST).get(name.removeprefix("timm:"), 32))
    shape = (3, size, size)
    spec_name = name if timm else f"torchvision:{name}"
    model = build_model(spec_name, classes, shape).eval()
    start = time.perf_counter()
    units = find_units(model, shape, residual=True)
    seconds = time.perf_counter() - start
    n_default = -1
    if default_units:
        try:
            n_default = len(find_units(model, shape))
        except EvopruneError:
            n_default = 0
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
    band_kept = decoded.kept[0]
    band_model = prune_channels(model, units, band_kept).eval()
    band_cost = cost.of_channels(band_kept)
    band_exact = (band_cost.flops, band_cost.params) == (flops_of(band_model, shape),
                                                         params_of(band_model))
    return Coverage(family_of(name), name, size, len(units), int((units.steps > 1).sum()),
                    len(units.left_out), tuple(sorted({why for _, why in units.left_out})),
                    analytic.flops, flops_of(pruned, shape), analytic.params, params_of(pruned),
                    runs, round_trip, in_band, seconds, band_exact, n_default)


def coverage_row(name: str, size: int, *, default_units: bool = False) -> dict[str, Any]:
    """One table row: the checks' figures, or the one line evoprune refuses the model with."""

    try:
        return check_model(name, size, default_units=default_units).to_dict()
    except EvopruneError as exc:
        row: dict[str, Any] = {"family": family_of(name), "model": name, "size": size,
                               "refused": str(exc), "ok": False}
    try:  # what was found before the refusal: the units and the groups left out whole

        shape = (3, size, size)
        spec = name if name.startswith("timm:") else f"torchvision:{name}"
        units = find_units(build_model(spec, 10, shape), shape, residual=True)
        row.update(units=len(units), left_out=len(units.left_out),
                   reasons=tuple(sorted({why for _, why in units.left_out})))
    except EvopruneError:
        pass
    return row


def timm_models() -> list[str]:
    """The `timm:NAME` spec of the model checked for each of timm's families."""
    return [f"timm:{n}" for n in TIMM_FAMILIES.values()]


def coverage_table(models: Sequence[str] | None = None, *, size: int = 224,
                   zoo: str = "torchvision") -> list[dict[str, Any]]:
    """Check `models` (default: the first of every family of `zoo`) at `size`; rows as plain data.

    zoo "timm" takes bare timm names (or `timm:NAME`), counts the units without residual
    groups too, and gives each model it cannot cover as a row with evoprune's one line.
    """
    if zoo == "timm":
        names = [m if m.startswith("timm:") else f"timm:{m}" for m in models] if models \
            else timm_models()
        return [coverage_row(name, size, default_units=True) for name in names]
    names = list(models) if models else [names[0] for names in FAMILIES.values()]
    return [check_model(name, size).to_dict() for name in names]


def format_coverage(rows: list[dict[str, Any]]) -> str:
    """Render coverage rows as a markdown table with the machine line."""

    lines = [f"machine: {machine()}", "",
             "| family | model | input | units (grouped) | left out | cost exact | runs, "
             "round trip, in band | find units |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "refused" in r:
            found = f"{r['units']} units, {r['left_out']} left out; " if "units" in r else ""
            lines.append(f"| {r['family']} | {r['model']} | {r['size']}×{r['size']} | "
                         f"{found}refused: {r['refused']} | | | | |")
            continue
        checks = "yes" if r["runs"] and r["round_trip"] and r["in_band"] else "NO"
        lines.append(f"| {r['family']} | {r['model']} | {r['size']}×{r['size']} | {r['units']}"
                     f" ({r['grouped_units']}) | {r['left_out']} | "
                     f"{'yes' if r['exact'] and r.get('band_exact', True) else 'NO'} | {checks} | "
                     f"{r['unit_seconds']:.1f} s |")
    timm = [r for r in rows if str(r["model"]).startswith("timm:")]
    if timm:
        default = sum(r.get("default_units", 0) > 0 and r["ok"] for r in timm)
        lines += ["", f"timm: {sum(r['ok'] for r in timm)} of {len(timm)} families covered with "
                      f"residual units, {default} with default units"]
    reasons = sorted({_general(why) for r in rows for why in r.get("reasons", ())})
    if reasons:
        lines += ["", "left out: " + "; ".join(reasons)]
    if len(timm) < len(rows):
        lines += ["", "not covered (refused with one line): " +
                  "; ".join(f"{k}: {v}" for k, v in NOT_FILTER_PRUNING.items())]
    return "\n".join(lines)


def _general(why: str) -> str:
    """A left-out reason without the layer it names (one line per kind in the table's footer)."""
    why = re.sub(r"grouped conv [\w.]+ ", "a grouped conv ", why)
    return re.sub(r"(unevenly onto|revisits a \w+ and) [\w.]+", r"\1 a layer", why)
