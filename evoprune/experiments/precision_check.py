"""Does bf16 autocast keep accuracy? fp32 against bf16 for the base training and the proxy.

`check_precision` trains the base in fp32 and in bf16 with two seeds each (cached like a
search's base, so a rerun reuses them), then fine-tunes recipes drawn without selection (and
the uniform one) from the bf16 base for the proxy's epochs, in fp32 and in bf16 with one seed
and in bf16 with a second seed. It compares the precision's effect with the seed's: the paired
mean difference bf16 − fp32 with its t interval, and the SD of the per-recipe differences
against the SD of the seed-to-seed differences. Precision "holds" where the interval lies within
± one seed SD (TOST at α) and the precision differences scatter no more than the seed ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evoprune.core.machine import bf16_native, machine
from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.pruning import prune_channels
from evoprune.network.units import find_units
from evoprune.spaces import Decoder, PruningSpace
from evoprune.training.base import BaseConfig, base_weights, build_base
from evoprune.training.data import batches_for, load_dataset
from evoprune.training.engine import Schedule, fit, resolve_device

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PrecisionCheck:
    """What the check trains: the base, the regime, the recipes and the proxy."""

    model: str = "resnet20"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    val_size: int = 5000
    train_size: int | None = 10000
    base_epochs: int = 15
    c_flops: float = 0.1
    c_std: float = 0.1  # the recipes' space: STD-0.1 (the widest spread)
    recipes: int = 12  # drawn without selection, plus the uniform recipe
    proxy_epochs: int = 2
    proxy_lr: float = 0.01
    batch_size: int = 128
    alpha: float = 0.05
    device: str = "auto"

    def base(self) -> BaseConfig:
        """The base network of this plan, as every job names it."""
        return BaseConfig(model=self.model, dataset=self.dataset, data_root=self.data_root,
                          residual=False, epochs=self.base_epochs, val_size=self.val_size,
                          train_size=self.train_size)

    def __post_init__(self) -> None:
        """Refuse a check that cannot compare anything."""
        if self.recipes < 2 or self.base_epochs < 1 or self.proxy_epochs < 1:
            raise EvopruneError("the precision check needs at least 2 recipes and 1 epoch")


def paired_effect(fp32: np.ndarray, bf16: np.ndarray, reseeded: np.ndarray,
                  alpha: float = 0.05) -> dict[str, float]:
    """Per recipe, d = bf16 − fp32 (same seed) and s = reseeded − bf16 (bf16, another seed).

    Returns d's mean with its t interval (1 − 2α, the TOST's) and p against 0; the SDs of d and
    s (d scatters like s if bf16 only re-rolls the noise); and the TOST p of |mean d| < margin,
    the margin being one run's seed SD, SD(s) / √2.
    """
    from scipy import stats

    d = np.asarray(bf16, float) - np.asarray(fp32, float)
    s = np.asarray(reseeded, float) - np.asarray(bf16, float)
    n, mean = len(d), float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n))
    margin = float(s.std(ddof=1) / np.sqrt(2))
    tq = float(stats.t.ppf(1 - alpha, n - 1))
    if se > 0:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
        p_tost = float(max(stats.t.sf((mean + margin) / se, n - 1),
                           stats.t.cdf((mean - margin) / se, n - 1)))
    else:
        p, p_tost = float(mean != 0), float(abs(mean) >= margin)
    return {"n": n, "mean": mean, "lo": mean - tq * se, "hi": mean + tq * se, "p": p,
            "sd_precision": float(d.std(ddof=1)), "sd_seed": float(s.std(ddof=1)),
            "margin": margin, "p_tost": p_tost}


def check_precision(config: PrecisionCheck, progress: Progress | None = None) -> dict[str, Any]:
    """Train, fine-tune and compare as the module says; return plain data."""

    say = progress or (lambda _s: None)
    device = resolve_device(config.device)
    if not bf16_native(device.type):
        raise EvopruneError(f"this {device.type} does not compute bf16 natively (no AVX-512 BF16 "
                            "or AMX): there is no bf16 to compare with fp32 here")
    raw = load_dataset(config.dataset, config.data_root, val_size=config.val_size,
                       train_size=config.train_size)
    data = {p: batches_for(raw, device, precision=p) for p in ("fp32", "bf16")}
    bases: dict[tuple[str, int], Any] = {}
    rows = []
    for precision in ("fp32", "bf16"):
        for seed in (0, 1):
            say(f"base {precision} seed {seed}: {config.base_epochs} epochs (cached)")
            result = base_weights(config.base(), device=config.device, precision=precision,
                                  seed=seed)
            model = build_base(config.model, raw.info, result["out"])
            bases[precision, seed] = model.to(device)
            epochs = result["history"]  # the training's own epochs (a cached one's too)
            seconds = sum(raw.sizes["train"] / h["images_per_s"] for h in epochs)
            rows.append({"precision": precision, "seed": seed, "val_acc": result["val_acc"],
                         "test_acc": result["test_acc"], "seconds": seconds,
                         "images_per_s": len(epochs) * raw.sizes["train"] / seconds})
    base = bases["bf16", 0]
    units = find_units(base, raw.info.in_shape, residual=True)
    decoder = Decoder(PruningSpace(c_flops=config.c_flops, c_std=config.c_std),
                      CostModel(base, units))
    drawn = decoder.sample(config.recipes, seed=0)
    kept = [*drawn.kept, decoder.uniform().kept[0]]
    schedule = Schedule(epochs=config.proxy_epochs, lr=config.proxy_lr,
                        batch_size=config.batch_size)
    proxy: dict[str, list[float]] = {"fp32": [], "bf16": [], "bf16_seed1": []}
    seconds: dict[str, list[float]] = {k: [] for k in proxy}
    for i, k in enumerate(kept):
        for key, precision, seed in (("fp32", "fp32", 0), ("bf16", "bf16", 0),
                                     ("bf16_seed1", "bf16", 1)):
            tic = time.perf_counter()
            model = prune_channels(base, units, k).to(device)
            proxy[key].append(fit(model, data[precision], schedule, seed=seed).val_acc)
            seconds[key].append(time.perf_counter() - tic)
        say(f"recipe {i + 1}/{len(kept)}: val acc fp32 {100 * proxy['fp32'][-1]:.2f}%, bf16 "
            f"{100 * proxy['bf16'][-1]:.2f}%, bf16 seed 1 {100 * proxy['bf16_seed1'][-1]:.2f}%")
    acc = {k: 100 * np.array(v) for k, v in proxy.items()}
    base_tests = {p: [r["test_acc"] * 100 for r in rows if r["precision"] == p] for p in data}
    return {"config": asdict(config), "machine": machine(), "sizes": raw.sizes, "base": rows,
            "base_gap": float(np.mean(base_tests["bf16"]) - np.mean(base_tests["fp32"])),
            "base_seed_gap": float(np.mean([abs(v[0] - v[1]) for v in base_tests.values()])),
            "proxy": {k: v.tolist() for k, v in acc.items()},
            "proxy_effect": paired_effect(acc["fp32"], acc["bf16"], acc["bf16_seed1"],
                                          alpha=config.alpha),
            "proxy_seconds": {k: float(np.mean(v)) for k, v in seconds.items()},
            "base_test": base_tests}


def format_check(r: dict[str, Any]) -> str:
    """The check as a table and one verdict line per stage."""
    c, e = r["config"], r["proxy_effect"]
    lines = [f"machine: {r['machine']}",
             f"{c['model']} on {c['dataset']}: {r['sizes']['train']} training, {r['sizes']['val']} "
             f"validation, {r['sizes']['test']} test images",
             f"{'base':<14} {'seed':>4} {'val %':>7} {'test %':>7} {'img/s':>7} {'seconds':>8}"]
    for b in r["base"]:
        lines.append(f"{b['precision']:<14} {b['seed']:>4} {100 * b['val_acc']:>7.2f} "
                     f"{100 * b['test_acc']:>7.2f} {b['images_per_s']:>7,.0f} {b['seconds']:>8.0f}")
    lines += [
        f"base ({c['base_epochs']} epochs): test bf16 − fp32 = {r['base_gap']:+.2f} pp (mean of "
        f"2 seeds); the seeds differ by {r['base_seed_gap']:.2f} pp within a precision (base "
        "timings are each training's own, taken whenever it ran: `evoprune bench train` "
        "gives the like-for-like speed ratio)",
        f"proxy ({c['proxy_epochs']}-epoch fine-tune, lr {c['proxy_lr']:g}, {e['n']} recipes of "
        f"STD-{c['c_std']:g} at c_flops {c['c_flops']:g} with the uniform one, from the bf16 "
        f"base): validation accuracy bf16 − fp32 = {e['mean']:+.2f} pp "
        f"[{e['lo']:+.2f}, {e['hi']:+.2f}] (paired t, {100 * (1 - 2 * c['alpha']):.0f}% "
        f"interval, p {e['p']:.2f}); SD of the differences {e['sd_precision']:.2f} pp, of a "
        f"second seed's {e['sd_seed']:.2f} pp; TOST within ± one run's seed SD "
        f"({e['margin']:.2f} pp): p {e['p_tost']:.3f}",
        f"proxy seconds a recipe: fp32 {r['proxy_seconds']['fp32']:.1f}, bf16 "
        f"{r['proxy_seconds']['bf16']:.1f} "
        f"({r['proxy_seconds']['fp32'] / r['proxy_seconds']['bf16']:.2f}x)",
        "verdict: " + verdict(e, c["alpha"])]
    return "\n".join(lines)


def verdict(e: dict[str, float], alpha: float) -> str:
    """"holds" (equivalent within the seed SD), "does not hold" (a significant difference
    beyond it) or "not shown"."""
    if e["p_tost"] < alpha:
        return (f"bf16 holds accuracy: the proxy's difference is within ± the seed SD "
                f"(TOST p {e['p_tost']:.3f} < {alpha:g})")
    if e["p"] < alpha and abs(e["mean"]) > e["margin"]:
        return f"bf16 does not hold accuracy: {e['mean']:+.2f} pp, p {e['p']:.3f}"
    return f"not shown either way at α {alpha:g} with {e['n']} recipes"
