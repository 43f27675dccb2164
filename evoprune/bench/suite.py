"""Benchmarks: each compares two things in one run and prints the ratio, machine and sizes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from evoprune.core.checkpoint import atomic_save
from evoprune.core.machine import bf16_native, machine
from evoprune.errors import EvopruneError
from evoprune.experiments.coverage import coverage_table, format_coverage
from evoprune.experiments.precision_check import PrecisionCheck, check_precision, format_check
from evoprune.network.cost import CostModel, flops_of, params_of
from evoprune.network.models import build_model
from evoprune.network.pruning import prune_channels
from evoprune.network.units import find_units
from evoprune.searching import BaseConfig, SamplerConfig, SearchConfig, prepare
from evoprune.searching.objective import ProxyConfig
from evoprune.searching.worker import build_context, run_worker
from evoprune.spaces import Decoder, PruningSpace
from evoprune.spaces.sampling import reject
from evoprune.training.data import DeviceBatches, batches_for, dataset_info, load_dataset
from evoprune.training.engine import Schedule, fit, resolve_device

if TYPE_CHECKING:
    from evoprune.spaces import Decoded, Decoder

# (model, input shape, classes): resnet56 at CIFAR size, resnet50 at ImageNet size (the paper's)
COST_CASES: dict[str, tuple[tuple[int, int, int], int]] = {
    "resnet20": ((3, 32, 32), 10),
    "resnet56": ((3, 32, 32), 10),
    "resnet110": ((3, 32, 32), 10),
    "vgg16": ((3, 32, 32), 10),
    "mobilenetv2": ((3, 32, 32), 10),
    "resnet18": ((3, 224, 224), 1000),
    "resnet50": ((3, 224, 224), 1000),
    "torchvision:densenet121": ((3, 224, 224), 1000),
    "torchvision:regnet_x_400mf": ((3, 224, 224), 1000),
    "torchvision:resnext50_32x4d": ((3, 224, 224), 1000),
}


def run_bench(name: str, **options: Any) -> tuple[list[dict[str, Any]], str]:
    """Check one benchmark's options (one-line EvopruneError), run it; return rows and table."""

    positive = [k for k in ("repeats", "n", "seconds", "epochs", "batch_size", "n_trials",
                            "n_synthetic", "n_old") if k in options and not options[k] > 0]
    if positive:
        raise EvopruneError(f"bench {name}: `{positive[0]}` must be positive")
    if name == "precision":

        config = PrecisionCheck(**{k: options[k] for k in ("data_root", "recipes",
                                                           "base_epochs", "device")})
        result = check_precision(config, progress=lambda line: print(line, flush=True))
        return [result], format_check(result)
    if name == "coverage":

        zoo = options.get("zoo") or "torchvision"
        size = options.get("size") or (64 if zoo == "timm" else 224)
        if size < 1:
            raise EvopruneError("bench coverage: `size` must be positive")
        if zoo == "timm":
            import importlib.util

            if importlib.util.find_spec("timm") is None:
                raise EvopruneError("bench coverage `zoo` timm needs timm: "
                                    "pip install 'evoprune[timm]'")
        rows = coverage_table(options["models"] or None, size=size, zoo=zoo)
        return rows, format_coverage(rows)
    if name in ("cost", "space"):
        options["models"] = options["models"] or (COST_MODELS if name == "cost"
                                                  else ("resnet56", "resnet50"))
        unknown = [m for m in options["models"] if m not in COST_CASES]
        if unknown:
            raise EvopruneError(f"bench takes models from {', '.join(COST_CASES)}")
        if name == "cost":
            rows = bench_cost(options["models"], repeats=options["repeats"])
            return rows, format_cost_rows(rows)
        rows = bench_space(options["models"], c_flops=options["c_flops"], n=options["n"],
                           seconds=options["seconds"])
        return rows, format_space_rows(rows)
    if name == "sample":
        bad = [c for c in options["cases"] if c not in SAMPLE_CASES]
        if bad:
            raise EvopruneError(f"bench sample takes cases from {', '.join(SAMPLE_CASES)}")
        rows = bench_sample(options["cases"], n=options["n"], n_old=options["n_old"],
                            residual=options["residual"])
        return rows, format_sample_rows(rows)
    cases = SEARCH_CASES if name == "search" else TRAIN_CASES
    bad = [c for c in options["cases"] if c not in cases]
    if bad:
        raise EvopruneError(f"bench {name} takes cases from {', '.join(cases)}")
    if name == "search":
        rows = bench_search(options["cases"], n_trials=options["n_trials"],
                            n_synthetic=options["n_synthetic"], device=options["device"])
        return rows, format_search_rows(rows)
    if options["sweep"]:
        rows = bench_train_sweep(options["cases"][0], epochs=options["epochs"],
                                 n_synthetic=options["n_synthetic"], device=options["device"])
        return rows, format_sweep_rows(rows)
    rows = bench_train(options["cases"], epochs=options["epochs"],
                       batch_size=options["batch_size"], n_synthetic=options["n_synthetic"],
                       device=options["device"])
    return rows, format_train_rows(rows)


def _median_time(fn: Callable[[], Any], repeats: int, inner: int = 1) -> float:
    """Median seconds of one call over `repeats` timings of `inner` calls each."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


COST_MODELS = ("resnet56", "resnet50", "torchvision:densenet121", "torchvision:regnet_x_400mf")


def bench_cost(models: Sequence[str] = COST_MODELS, *, repeats: int = 5,
               seed: int = 0) -> list[dict[str, Any]]:
    """Time analytic cost evaluation against FlopCounterMode on the pruned model, and pruning."""
    rng = np.random.default_rng(seed)
    return [_bench_cost_one(name, repeats, rng) for name in models]


def _bench_cost_one(name: str, repeats: int, rng: np.random.Generator) -> dict[str, Any]:

    shape, classes = COST_CASES[name]
    base = build_model(name, classes, shape)
    start = time.perf_counter()
    units = find_units(base, shape)
    cost = CostModel(base, units)
    setup = time.perf_counter() - start
    recipe = rng.uniform(0.0, 0.8, len(units))
    kept = cost.kept(recipe)
    pruned = prune_channels(base, units, kept)  # also warms up the tracing path
    analytic = cost.of_recipe(recipe)
    measured_flops, measured_params = flops_of(pruned, shape), params_of(pruned)
    t_analytic = _median_time(lambda: cost.of_channels(kept), repeats, inner=2000)
    t_recipe = _median_time(lambda: cost.of_recipe(recipe), repeats, inner=2000)
    t_counter = _median_time(lambda: flops_of(pruned, shape), repeats)
    t_prune = _median_time(lambda: prune_channels(base, units, kept), repeats)
    return {
        "model": name, "in_shape": list(shape), "units": len(units),
        "base_macs": cost.base_flops // 2, "flops": analytic.flops, "params": analytic.params,
        "exact": analytic.flops == measured_flops and analytic.params == measured_params,
        "analytic_us": t_analytic * 1e6, "recipe_us": t_recipe * 1e6,
        "counter_ms": t_counter * 1e3, "speedup": t_counter / t_analytic,
        "recipe_speedup": t_counter / t_recipe, "prune_s": t_prune, "setup_s": setup,
        "repeats": repeats,
    }


def format_cost_rows(rows: list[dict[str, Any]]) -> str:
    """Render bench_cost rows as a table with the machine line."""
    lines = [f"machine: {machine()}",
             f"{'model':<26} {'input':<10} {'units':>5} {'cost(kept)':>11} {'cost(recipe)':>12} "
             f"{'FlopCounter':>11} {'speed-up':>17} {'prune':>7} {'exact':>5}"]
    for r in rows:
        shape = "x".join(str(s) for s in r["in_shape"])
        lines.append(f"{r['model']:<26} {shape:<10} {r['units']:>5} {r['analytic_us']:>8.1f} µs "
                     f"{r['recipe_us']:>9.1f} µs {r['counter_ms']:>8.1f} ms "
                     f"{r['speedup']:>7,.0f}x/{r['recipe_speedup']:>7,.0f}x "
                     f"{r['prune_s']:>5.3f}s {'yes' if r['exact'] else 'NO':>5}")
    lines.append(
        f"medians of {rows[0]['repeats'] if rows else 0} timings, batch 1. cost(kept): FLOPs, params "
        "and mCB of a kept-channel vector; cost(recipe): the same from ratios, validation and "
        "rounding included; FlopCounter: torch FlopCounterMode forward of the pruned model; "
        "speed-up: FlopCounter time over cost(kept)/cost(recipe); prune: dependency graph + "
        "slicing of a copy; exact: analytic FLOPs and params equal the measured ones.")
    return "\n".join(lines)


def reject_sample(decoder: Decoder, n: int, seed: int = 0, max_draws: int = 10_000_000,
                  batch: int = 4096) -> tuple[Decoded, int]:
    """The paper's/EagleEye's sampler, the reference bench_space races: returns (accepted, draws).

    Uniform ratios in [0, r_max], `batch` at a time, kept when the rounded recipe is inside every
    band, until n are kept or at least max_draws are drawn (`evoprune.spaces.sampling.reject`).
    """

    recipes, draws = reject(decoder.bound, n, np.random.default_rng(seed), max_draws, batch)
    return decoder.describe(recipes), draws


def bench_space(models: Sequence[str] = ("resnet56", "resnet50"), *, c_flops: float = 0.25,
                n: int = 2000, seconds: float = 5.0, seed: int = 0) -> list[dict[str, Any]]:
    """Valid recipes per second: batch `decode` against rejection sampling, per unit set."""
    rows = []
    for name in models:
        for residual in (False, True):
            rows.append(_bench_space_one(name, residual, c_flops, n, seconds, seed))
    return rows


def _bench_space_one(name: str, residual: bool, c_flops: float, n: int, seconds: float,
                     seed: int) -> dict[str, Any]:

    shape, classes = COST_CASES[name]
    base = build_model(name, classes, shape)
    cost = CostModel(base, find_units(base, shape, residual=residual))
    decoder = Decoder(PruningSpace(c_flops=c_flops), cost)
    genotypes = np.random.default_rng(seed).random((n, decoder.n_genes))
    decoder.decode(genotypes[:8])  # warm-up
    start = time.perf_counter()
    out = decoder.decode(genotypes)
    decode_s = time.perf_counter() - start
    valid = int(out.inside.sum())
    accepted = draws = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        got, made = reject_sample(decoder, 10**9, seed=seed + draws, max_draws=4096)
        accepted += len(got.recipes)
        draws += made
    reject_s = time.perf_counter() - start
    reject_rate = accepted / reject_s
    bound = max(accepted, 1) / reject_s  # with no acceptance: at most one per elapsed time
    return {
        "model": name, "in_shape": list(shape), "units": len(cost.channels),
        "unit_set": "internal+residual" if residual else "internal", "c_flops": c_flops,
        "decoded": n, "decoded_inside": valid, "decode_per_s": valid / decode_s,
        "reject_draws": draws, "reject_accepted": accepted, "acceptance": accepted / draws,
        "reject_per_s": reject_rate, "reject_seconds": reject_s,
        "speedup": valid / decode_s / bound, "speedup_is_lower_bound": accepted == 0,
    }


def format_space_rows(rows: list[dict[str, Any]]) -> str:
    """Render bench_space rows as a table with the machine line."""
    lines = [f"machine: {machine()}",
             f"{'model':<10} {'units':<18} {'decode valid/s':>14} {'hit':>6} {'reject valid/s':>14} "
             f"{'acceptance':>14} {'speed-up':>10}"]
    for r in rows:
        sign = ">" if r["speedup_is_lower_bound"] else ""
        units = f"{r['units']} {r['unit_set']}"
        lines.append(f"{r['model']:<10} {units:<18} {r['decode_per_s']:>14,.0f} "
                     f"{r['decoded_inside'] / r['decoded']:>6.1%} {r['reject_per_s']:>14,.1f} "
                     f"{r['reject_accepted']:>5}/{r['reject_draws']:<8,} "
                     f"{sign + format(r['speedup'], ',.0f') + 'x':>10}")
    if rows:
        r = rows[0]
        lines.append(
            f"c_flops {r['c_flops']} ± 0.002, r_max 0.95; decode: {r['decoded']} uniform genotypes "
            f"in one batch; reject: uniform ratios in [0, 0.95] for {r['reject_seconds']:.1f} s per "
            "case, kept when the rounded recipe is in the band ('>' when none was: the rate is "
            "then bounded by one per elapsed time).")
    return "\n".join(lines)


SAMPLE_CASES: dict[str, tuple[str, dict[str, float]]] = {  # case: (model, space)
    "resnet50-mcb": ("resnet50", {"c_flops": 0.25, "c_mcb": 1.0}),
    "resnet56-flops-params": ("resnet56", {"c_flops": 0.25, "c_params": 0.3}),
}


def bench_sample(cases: Sequence[str] = tuple(SAMPLE_CASES), *, n: int = 2000, n_old: int = 200,
                 residual: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    """Recipes per second of `Decoder.sample` (the block sampler) against the path before it.

    Each case binds its space to the model as `evoprune sample` does (default dataset, so its
    input shape); the old path is `Sampler.draw(method="gibbs")`: a rejection pilot, then
    Gibbs chains from decoded starts. Both draw from the same law: a KS test compares them.
    """
    return [_bench_sample_one(case, n, n_old, residual, seed) for case in cases]


def _bench_sample_one(case: str, n: int, n_old: int, residual: bool, seed: int
                      ) -> dict[str, Any]:
    from scipy.stats import ks_2samp


    model, bands = SAMPLE_CASES[case]
    dataset = BaseConfig().dataset
    info = dataset_info(dataset)
    base = build_model(model, info.num_classes, info.in_shape)
    decoder = Decoder(PruningSpace(**bands), CostModel(base, find_units(base, info.in_shape,
                                                                        residual=residual)))
    sampler = decoder.sampler
    start = time.perf_counter()
    block = sampler.block  # tables, tilt and pilot: once per space
    setup = time.perf_counter() - start
    start = time.perf_counter()
    new = decoder.sample(n, seed)
    new_s = time.perf_counter() - start

    def starts(rng: np.random.Generator, m: int) -> np.ndarray:
        return decoder.decode(rng.random((m, decoder.n_genes))).recipes

    start = time.perf_counter()
    old = decoder.describe(sampler.draw(n_old, seed + 1, starts, method="gibbs"))
    old_s = time.perf_counter() - start
    pairs = [(new.recipes[:, u], old.recipes[:, u]) for u in range(decoder.n)]
    pairs += [(new.std, old.std), (new.mcb, old.mcb), (new.flops_ratio, old.flops_ratio)]
    ks = min(ks_2samp(a, b).pvalue for a, b in pairs)
    return {
        "case": case, "model": model, "dataset": dataset, "in_shape": list(info.in_shape),
        "units": decoder.n, "unit_set": "internal+residual" if residual else "internal",
        "space": decoder.space.bands(), "method": "blocks" if block is not None else "gibbs",
        "blocks": len(block[0].blocks) if block is not None else None,
        "kept_per_proposal": block[1] if block is not None else None, "setup_s": setup,
        "n": n, "new_s": new_s, "new_per_s": n / new_s, "inside": bool(new.inside.all()
                                                                        and old.inside.all()),
        "n_old": n_old, "old_s": old_s, "old_per_s": n_old / old_s,
        "ratio": (n / new_s) / (n_old / old_s), "ks_min_p": float(ks), "ks_tests": len(pairs),
        "machine": machine(),
    }


def format_sample_rows(rows: list[dict[str, Any]]) -> str:
    """Render bench_sample rows as a table with the machine line."""
    lines = [f"machine: {rows[0]['machine'] if rows else machine()}",
             f"{'case':<22} {'units':<12} {'method':<7} {'new recipes/s':>13} {'old recipes/s':>13} "
             f"{'ratio':>7} {'setup':>6} {'kept/prop':>9} {'KS min p':>9} {'inside':>6}"]
    for r in rows:
        kept = f"{r['kept_per_proposal']:.2g}" if r["kept_per_proposal"] is not None else "–"
        lines.append(f"{r['case']:<22} {str(r['units']) + ' ' + r['unit_set']:<12.12} "
                     f"{r['method']:<7} {r['new_per_s']:>13,.0f} {r['old_per_s']:>13,.1f} "
                     f"{r['ratio']:>6,.0f}x {r['setup_s']:>5.2f}s {kept:>9} "
                     f"{r['ks_min_p']:>9.3f} {'yes' if r['inside'] else 'NO':>6}")
    if rows:
        r = rows[0]
        lines.append(
            f"new: Decoder.sample, {r['n']} recipes after setup (block tables, tilt, pilot: "
            f"'setup'); old: Sampler.draw(method='gibbs'), {r['n_old']} recipes (a rejection "
            "pilot, then Gibbs chains from decoded starts), its setup included; ratio: new "
            "recipes/s over old. KS min p: the smallest two-sample KS p-value between the two "
            f"paths' draws over every unit's ratio, std, mCB and FLOPs ({r['ks_tests']} tests; "
            f"Bonferroni 0.01 is {0.01 / r['ks_tests']:.1e}). Spaces: "
            + "; ".join(f"{x['case']} {x['model']} {'x'.join(map(str, x['in_shape']))} "
                        f"{x['space']}" for x in rows) + ".")
    return "\n".join(lines)


TRAIN_CASES: dict[str, tuple[str, str]] = {  # case: (model, dataset)
    "resnet20-digits": ("resnet20", "digits"),
    "resnet20-28px": ("resnet20", "synthetic:1x28x28:10"),  # Fashion-MNIST's shape
    "resnet56-cifar": ("resnet56", "synthetic:3x32x32:10"),
}


def bench_train(cases: Sequence[str] = tuple(TRAIN_CASES), *, epochs: int = 1,
                batch_size: int = 128, n_synthetic: int = 2048, device: str = "auto",
                seed: int = 0) -> list[dict[str, Any]]:
    """Training images/s of the engine (fp32; and bf16 where native) against a plain DataLoader
    loop (fp32), same model and batch."""
    return [_bench_train_one(c, epochs, batch_size, n_synthetic, device, seed) for c in cases]


def _reference_loop(model: Any, data: Any, batch_size: int, epochs: int, device: Any,
                    seed: int) -> float:
    """torch DataLoader over the uint8 images with per-sample torchvision transforms; images/s."""
    import torch
    import torchvision.transforms.v2 as T
    from torch.utils.data import DataLoader, Dataset

    info = data.info
    pad = 4 if info.in_shape[1] >= 32 else 1
    steps = [T.RandomCrop(info.in_shape[1:], padding=pad)]
    if info.flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(info.mean, info.std)]
    transform = T.Compose(steps)

    class PerSample(Dataset):
        def __len__(self) -> int:
            return len(data.train_y)

        def __getitem__(self, i: int) -> tuple[Any, Any]:
            return transform(data.train_x[i]), data.train_y[i]

    loader = DataLoader(PerSample(), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed),
                        pin_memory=device.type == "cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.to(device).train()
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def _bench_train_one(case: str, epochs: int, batch_size: int, n_synthetic: int, device_spec: str,
                     seed: int) -> dict[str, Any]:
    import torch


    name, dataset = TRAIN_CASES[case]
    device = resolve_device(device_spec)
    data = load_dataset(dataset, synthetic_size=(n_synthetic, 256), seed=seed)
    info = data.info
    torch.manual_seed(seed)
    model = build_model(name, info.num_classes, info.in_shape)
    reference = _reference_loop(model, data, batch_size, epochs, device, seed)
    rates = {}
    for precision in ("fp32", "bf16") if bf16_native(device.type) else ("fp32",):
        torch.manual_seed(seed)
        model = build_model(name, info.num_classes, info.in_shape)
        batches = DeviceBatches(data, device, channels_last=device.type == "cuda",
                                precision=precision)
        rates[precision] = fit(model, batches, Schedule(epochs=epochs, lr=0.01,
                                                        batch_size=batch_size),
                               seed=seed).images_per_s
    fp32, bf16 = rates["fp32"], rates.get("bf16")
    return {"case": case, "model": name, "dataset": dataset, "device": str(device),
            "train_images": len(data.train_y), "epochs": epochs, "batch_size": batch_size,
            "threads": torch.get_num_threads(), "engine_images_per_s": fp32,
            "reference_images_per_s": reference, "ratio": fp32 / reference,
            "engine_epoch_s": len(data.train_y) / fp32, "bf16_images_per_s": bf16,
            "bf16_ratio": bf16 / fp32 if bf16 else None}


def format_train_rows(rows: list[dict[str, Any]]) -> str:
    """Render bench_train rows with the machine line."""
    lines = [f"machine: {machine()}",
             f"{'case':<16} {'device':<7} {'images':>7} {'batch':>5} {'engine img/s':>13} "
             f"{'reference img/s':>16} {'ratio':>6} {'epoch':>8} {'bf16 img/s':>11} "
             f"{'bf16/fp32':>9}"]
    for r in rows:
        bf16 = (f"{r['bf16_images_per_s']:>11,.0f} {r['bf16_ratio']:>8.2f}x"
                if r.get("bf16_ratio") else f"{'–':>11} {'–':>9}")
        lines.append(f"{r['case']:<16} {r['device']:<7} {r['train_images']:>7} {r['batch_size']:>5} "
                     f"{r['engine_images_per_s']:>13,.0f} {r['reference_images_per_s']:>16,.0f} "
                     f"{r['ratio']:>5.2f}x {r['engine_epoch_s']:>7.2f}s {bf16}")
    lines.append("engine: device-resident uint8 data, batches by index, crop/flip/normalise on the "
                 "device (channels_last on CUDA), in fp32 and, where the device computes bf16 "
                 "natively (AVX-512 BF16 or AMX CPUs, GPUs), with bf16 autocast; reference: "
                 "DataLoader over the same images with per-sample torchvision transforms, fp32; "
                 f"training steps only, {rows[0]['epochs'] if rows else 0} epoch(s) each.")
    return "\n".join(lines)


def bench_train_sweep(case: str = "resnet20-digits", *, epochs: int = 2, n_synthetic: int = 2048,
                      device: str = "auto", seed: int = 0) -> list[dict[str, Any]]:
    """Time one option of the engine at a time against its defaults (batch 128, all threads)."""
    import torch


    name, dataset = TRAIN_CASES[case]
    dev = resolve_device(device)
    data = load_dataset(dataset, synthetic_size=(n_synthetic, 256), seed=seed)
    threads = torch.get_num_threads()
    variants: list[tuple[str, dict[str, Any]]] = [("warm-up", {}), ("default", {})]
    if threads > 1:
        variants.append((f"threads={threads // 2}", {"threads": threads // 2}))
    variants += [("batch=64", {"batch": 64}), ("batch=256", {"batch": 256}),
                 ("channels_last", {"channels_last": True}), ("torch.compile", {"compile": True})]
    rows = []
    for label, opt in variants:
        torch.set_num_threads(opt.get("threads", threads))
        torch.manual_seed(seed)
        model = build_model(name, data.info.num_classes, data.info.in_shape)
        batches = DeviceBatches(data, dev, channels_last=opt.get("channels_last",
                                                                 dev.type == "cuda"))
        n_epochs = epochs + 1 if opt.get("compile") else epochs  # first epoch compiles
        result = fit(model, batches, Schedule(epochs=n_epochs, lr=0.01,
                                              batch_size=opt.get("batch", 128)),
                     seed=seed, compile=opt.get("compile", False))
        steady = result.history[1:] if opt.get("compile") else result.history
        rate = len(steady) * batches.n_train / sum(batches.n_train / h["images_per_s"]
                                                  for h in steady)
        rows.append({"case": case, "device": str(dev), "option": label, "images_per_s": rate,
                     "first_epoch_s": batches.n_train / result.history[0]["images_per_s"],
                     "epochs": len(steady), "train_images": batches.n_train})
    torch.set_num_threads(threads)
    rows = rows[1:]  # the warm-up run only primes allocators and caches
    base = rows[0]["images_per_s"]
    for r in rows:
        r["ratio_to_default"] = r["images_per_s"] / base
    return rows


def format_sweep_rows(rows: list[dict[str, Any]]) -> str:
    """Render bench_train_sweep rows with the machine line."""
    lines = [f"machine: {machine()}",
             f"{'option':<15} {'img/s':>8} {'vs default':>11} {'first epoch':>12}"]
    for r in rows:
        lines.append(f"{r['option']:<15} {r['images_per_s']:>8,.0f} {r['ratio_to_default']:>10.2f}x "
                     f"{r['first_epoch_s']:>11.1f}s")
    if rows:
        lines.append(f"{rows[0]['case']} on {rows[0]['device']}, {rows[0]['train_images']} images, "
                     f"{rows[0]['epochs']} timed epoch(s) per option; torch.compile is timed after "
                     "its first (compiling) epoch.")
    return "\n".join(lines)


SEARCH_CASES: dict[str, tuple[str, str]] = {  # case: (model, dataset)
    "resnet20-digits": ("resnet20", "digits"),
    "resnet56-synthetic": ("resnet56", "synthetic:3x32x32:10"),
}


def bench_search(cases: Sequence[str] = tuple(SEARCH_CASES), *, n_trials: int = 6,
                 n_synthetic: int = 2048, device: str = "auto") -> list[dict[str, Any]]:
    """Time the search's own work per trial (decode, prune, sampler, storage) against training.

    Each case runs the real worker loop (`search.run_worker`) on a fresh SQLite storage with a
    1-epoch proxy; the first trial (warm-up) is left out of the medians.
    """
    return [_bench_search_one(case, n_trials, n_synthetic, device) for case in cases]


def _bench_search_one(case: str, n_trials: int, n_synthetic: int, device_spec: str
                      ) -> dict[str, Any]:
    import tempfile

    import torch


    model_name, dataset = SEARCH_CASES[case]
    device = resolve_device(device_spec)
    data = load_dataset(dataset, synthetic_size=(n_synthetic, 512))
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        base = build_model(model_name, data.info.num_classes, data.info.in_shape)
        ckpt = f"{tmp}/base.pt"
        atomic_save(base.state_dict(), ckpt)
        config = SearchConfig(
            space=PruningSpace(c_flops=0.25, c_mcb=1.0),
            base=BaseConfig(model=model_name, dataset=dataset, checkpoint=ckpt),
            proxy=ProxyConfig(epochs=1), sampler=SamplerConfig(population=4),
            storage=f"sqlite:///{tmp}/bench.db", n_trials=n_trials + 1, uniform_seeds=1,
            device=str(device), baselines=())
        prepare(config)
        units = find_units(base, data.info.in_shape)
        ctx = build_context(config, ckpt, str(device),
                            loaded=(base, units, batches_for(data, device)))
        timings = run_worker(config, ckpt, context=ctx)["timings"][1:]
    med = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
    training = med["train_eval"]
    rest = med["total"] - training - med["decode"] - med["prune"] - med["suggest"] - med["record"]
    overhead = med["total"] - training
    return {"case": case, "model": model_name, "dataset": dataset, "device": str(device),
            "units": len(units), "n_train": data.train_x.shape[0] if hasattr(data, "train_x")
            else None, "trials": len(timings), "trial_s": med["total"], "train_eval_s": training,
            "decode_s": med["decode"], "prune_s": med["prune"], "params_write_s": med["suggest"],
            "attrs_write_s": med["record"], "ask_tell_s": rest,
            "overhead_s": overhead, "overhead_pct": 100 * overhead / med["total"],
            "machine": machine()}


def format_search_rows(rows: list[dict[str, Any]]) -> str:
    """Render bench_search rows as a table with the machine."""
    lines = [f"machine: {rows[0]['machine']}" if rows else "no rows",
             "search overhead per trial (medians, ms unless marked; 1-epoch proxy; SQLite, WAL)",
             f"{'case':<20}{'units':>6}{'n_train':>8}{'trial s':>8}{'train+eval s':>13}"
             f"{'decode':>7}{'prune':>7}{'params':>7}{'attrs':>6}{'ask/tell':>9}{'overhead':>9}"]
    for r in rows:
        lines.append(f"{r['case']:<20}{r['units']:>6}{r['n_train'] or 0:>8}{r['trial_s']:>8.3f}"
                     f"{r['train_eval_s']:>13.3f}{1000 * r['decode_s']:>7.1f}"
                     f"{1000 * r['prune_s']:>7.1f}{1000 * r['params_write_s']:>7.1f}"
                     f"{1000 * r['attrs_write_s']:>6.1f}{1000 * r['ask_tell_s']:>9.1f}"
                     f"{r['overhead_pct']:>8.1f}%")
    lines.append("overhead = everything but training and evaluation, as a share of the trial; "
                 "params = the genotype's writes (one per gene), attrs = the user_attrs (one "
                 f"transaction), ask/tell = sampler and trial state (device "
                 f"{rows[0]['device'] if rows else '?'})")
    return "\n".join(lines)
