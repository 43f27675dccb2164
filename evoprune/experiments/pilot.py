"""The proxy pilot: how short a fine-tune still ranks recipes like a long one (issue 15).

At one regime, recipes drawn without selection from the reproduction's spaces, plus the uniform
recipe, are each fine-tuned for t in `epochs` (scored on validation, `seeds` seeds) and once for
`long_epochs` (scored on test, the reference). `run_pilot` appends every run to runs.jsonl as it
ends (a rerun skips what is there, so an interrupted pilot resumes), then `pilot_table` gives
Kendall τ-b of each t against the long fine-tune (one seed: what a search trial gets; and the
seeds' mean), the seeds' own agreement, the seed SD and the seconds per fine-tune, and `choose`
names the cheapest t whose one-seed τ reaches the target. t = 0 is adaptive BN only (rung 0 of
successive halving, the search's screen); `multi_fidelity` replays successive-halving policies
over the t on the runs (evoprune.searching.fidelity). Adding t to a folder's pilot resumes it.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evoprune.analysis.fit import _kendall_tau_b, unselected_fidelity
from evoprune.core.machine import DEFAULT_PRECISION, machine
from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.pruning import prune_channels
from evoprune.network.units import find_units
from evoprune.searching.fidelity import Policy, default_policies, random_regret, simulate, verdict
from evoprune.spaces import Decoder, PruningSpace
from evoprune.training.base import BaseConfig, base_weights, build_base
from evoprune.training.data import batches_for, load_dataset
from evoprune.training.engine import Schedule, adaptive_bn, evaluate, fit, resolve_device

Progress = Callable[[str], None]
LONG = "long"  # the key of the reference fine-tune in runs.jsonl


@dataclass(frozen=True)
class PilotConfig:
    """One pilot: the base, the regime and spaces, the fine-tunes compared."""

    model: str = "resnet20"
    dataset: str = "fashion-mnist"
    data_root: str | None = None  # Fashion-MNIST's folder if not Debian's
    residual: bool = True
    val_size: int = 5000  # the validation split every proxy reads
    train_size: int | None = 10000  # stratified training subset (the CPU plan); None: all
    base_epochs: int = 15  # the base's training (lr 0.1, cosine), cached like a search's
    c_flops: float = 0.1  # the regime (an extreme one)
    spaces: tuple[str, ...] = ("std:0.1", "std:0.05", "std:0.01", "mcb:1.0")  # the reproduction's
    per_space: int = 4  # recipes drawn from each space, without selection
    epochs: tuple[int, ...] = (1, 2, 4, 8)  # the candidate proxies' epochs; 0: adaptive BN only
    seeds: int = 2  # seeds of each candidate proxy
    long_epochs: int = 20  # the reference fine-tune, scored on test
    long_seed: int = 100  # its seed: none of the proxies' (0, 1, …)
    lr: float = 0.01  # the paper's fine-tune lr (cosine), for proxies and reference alike
    batch_size: int = 128
    tau_target: float = 0.6  # the cheapest t whose one-seed τ reaches this is chosen
    seed: int = 0  # the recipes' draws
    n_boot: int = 1000  # bootstrap draws of each τ's interval (recipes resampled)
    precision: str = DEFAULT_PRECISION  # auto, fp32 or bf16 autocast
    device: str = "auto"
    out: str = "studies/fashion-mnist/pilot"

    def base(self) -> BaseConfig:
        """The base network of this plan, as every job names it."""
        return BaseConfig(model=self.model, dataset=self.dataset, data_root=self.data_root,
                          residual=self.residual, epochs=self.base_epochs, val_size=self.val_size,
                          train_size=self.train_size)

    def __post_init__(self) -> None:
        """Refuse a pilot that cannot rank anything."""
        if self.per_space < 1 or len(self.spaces) < 1 or self.per_space * len(self.spaces) < 4:
            raise EvopruneError("the pilot needs at least 4 drawn recipes (`per_space` × spaces)")
        if not self.epochs or min(self.epochs) < 0 or self.long_epochs < 1 or self.seeds < 1:
            raise EvopruneError("`epochs` must be at least 0 (0: adaptive BN only), "
                                "`long_epochs` and `seeds` at least 1")
        if not 0 < self.c_flops < 1:
            raise EvopruneError(f"`c_flops` must be in (0, 1), got {self.c_flops}")
        for spec in self.spaces:
            space_of(spec, self.c_flops)

    def identity(self) -> dict[str, Any]:
        """What runs.jsonl's runs depend on: everything but where and how fast they run."""
        out = asdict(self)
        for key in ("device", "out", "n_boot", "tau_target"):
            out.pop(key)
        return out

    def resume_identity(self) -> dict[str, Any]:
        """The identity less `epochs`: a run of t depends on t, not on which other t are run,
        so a pilot with other t (t = 0 added, say) resumes a folder's runs."""
        out = self.identity()
        out.pop("epochs")
        return out


def space_of(spec: str, c_flops: float) -> Any:
    """`std:X` or `mcb:X` as a PruningSpace at c_flops (one-line error otherwise)."""

    kind, _, value = spec.partition(":")
    try:
        x = float(value)
    except ValueError:
        x = None
    if kind not in ("std", "mcb") or x is None:
        raise EvopruneError(f"pilot space {spec!r}: write std:X or mcb:X")
    return PruningSpace(c_flops=c_flops, **({"c_std": x} if kind == "std" else {"c_mcb": x}))


def draw_recipes(config: PilotConfig, cost: Any) -> list[dict[str, Any]]:
    """`per_space` recipes drawn from each space (seeded, no selection), then the uniform one."""

    out: list[dict[str, Any]] = []
    uniform = None
    for i, spec in enumerate(config.spaces):
        decoder = Decoder(space_of(spec, config.c_flops), cost)
        uniform = uniform or decoder.uniform()
        drawn = decoder.sample(config.per_space, seed=config.seed + i)
        out += [_recipe(f"{decoder.space.label}#{j}", drawn, j) for j in range(config.per_space)]
    assert uniform is not None
    return [*out, _recipe("uniform", uniform, 0)]


def _recipe(name: str, d: Any, i: int) -> dict[str, Any]:
    """Row i of a Decoded batch as plain data."""
    return {"name": name, "kept": [int(k) for k in d.kept[i]],
            "recipe": [round(float(r), 6) for r in d.recipes[i]],
            "flops_ratio": float(d.flops_ratio[i]), "mcb": float(d.mcb[i]), "std": float(d.std[i])}


def jobs(config: PilotConfig) -> list[tuple[int | str, int]]:
    """The fine-tunes of one recipe: (epochs, seed) per proxy and seed, then (LONG, long_seed)."""
    return [(t, s) for t in config.epochs for s in range(config.seeds)] + \
        [(LONG, config.long_seed)]


def _key(name: str, t: int | str, seed: int) -> str:
    return f"{name}|{t}|{seed}"


def read_runs(path: Path) -> dict[str, dict[str, Any]]:
    """The finished runs of runs.jsonl by key (a torn last line, from a kill, is ignored)."""
    runs: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            runs[_key(row["recipe"], row["t"], row["seed"])] = row
    return runs


def _check_folder(out: Path, config: PilotConfig,
                  recipes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """Write pilot_config.json, or refuse a folder that holds another pilot's runs; return the
    recipes to run and whether they are the folder's rather than this draw's.

    Only `epochs` may differ (other t are other runs of the same recipes): the file then
    records the union of the t run so far. The folder's recipes are the ones its runs
    measured, so they are kept where the same config now draws others (a sampler changed)."""
    meta = json.loads(json.dumps({"config": config.identity(), "recipes": recipes}))
    path = out / "pilot_config.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        old = dict(stored.get("config", {}))
        before = old.pop("epochs", [])
        new = dict(meta["config"])
        new.pop("epochs")
        names = [r["name"] for r in stored.get("recipes", [])]
        if old != new or names != [r["name"] for r in meta["recipes"]]:
            raise EvopruneError(f"{out} holds another pilot's runs (its pilot_config.json "
                                "differs in more than `epochs`): choose another `out` or "
                                "remove that folder")
        kept = stored["recipes"]
        union = sorted(set(before) | set(config.epochs))
        if union != before:
            stored["config"]["epochs"] = union
            path.write_text(json.dumps(stored, indent=1) + "\n")
        return kept, kept != meta["recipes"]
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1) + "\n")
    return meta["recipes"], False


def run_pilot(config: PilotConfig, progress: Progress | None = None, *,
              report_only: bool = False) -> dict[str, Any]:
    """Run (or resume) the pilot, write pilot.json and pilot.md to `out`; return the table.

    `report_only` runs no fine-tune: the table of the runs so far (a partial pilot's)."""

    say = progress or (lambda _s: None)
    device = resolve_device(config.device)
    data = batches_for(load_dataset(config.dataset, config.data_root, val_size=config.val_size,
                                    train_size=config.train_size), device,
                       precision=config.precision)
    say(f"base: {config.model} on {config.dataset} {data.n_train}/{data.n_val}/{data.n_test} "
        f"(train/val/test), {config.base_epochs} epochs, cached under studies/checkpoints")
    trained = base_weights(config.base(), device=config.device, precision=config.precision,
                           progress=lambda r: say(f"  base epoch {r['epoch']}: val "
                                                  f"{100 * r['val_acc']:.2f}%"))
    base = build_base(config.model, data.info, trained["out"])
    base.to(device)
    base_val, base_test = (evaluate(base, data, s).top1 for s in ("val", "test"))
    units = find_units(base, data.info.in_shape, residual=config.residual)
    recipes = draw_recipes(config, CostModel(base, units))
    out = Path(config.out)
    recipes, stored = _check_folder(out, config, recipes)
    if stored:
        say(f"the recipes are {out}'s (pilot_config.json), which its runs measured: this "
            "code's sampler draws others from the same seeds")
    runs = read_runs(out / "runs.jsonl")
    todo = [] if report_only else [(r, t, s) for r in recipes for t, s in jobs(config)
                                   if _key(r["name"], t, s) not in runs]
    total = len(recipes) * len(jobs(config))
    say(f"base accuracy {100 * base_val:.2f}% val, {100 * base_test:.2f}% test; "
        f"{len(recipes)} recipes, {len(runs)} of {total} fine-tunes done, {len(todo)} to run "
        f"({data.precision} on {device})")
    for i, (r, t, s) in enumerate(todo, 1):
        tic = time.perf_counter()
        model = prune_channels(base, units, r["kept"]).to(device)
        epochs = config.long_epochs if t == LONG else int(t)
        if epochs == 0:  # rung 0: adaptive BN only (the screen's), no gradient step
            adaptive_bn(model, data, seed=s)
            val_acc = evaluate(model, data, "val").top1
        else:
            val_acc = fit(model, data, Schedule(epochs=epochs, lr=config.lr,
                                                batch_size=config.batch_size), seed=s).val_acc
        row = {"recipe": r["name"], "t": t, "seed": s, "epochs": epochs,
               "val_acc": val_acc, "val_drop": 100 * (base_val - val_acc),
               "seconds": time.perf_counter() - tic, "precision": data.precision}
        if t == LONG:
            row["test_acc"] = evaluate(model, data, "test").top1
            row["test_drop"] = 100 * (base_test - row["test_acc"])
        with (out / "runs.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        runs[_key(r["name"], t, s)] = row
        say(f"[{i}/{len(todo)}] {r['name']} t={t} seed {s}: val drop {row['val_drop']:.2f} pp"
            + (f", test drop {row['test_drop']:.2f} pp" if t == LONG else "")
            + f" ({row['seconds']:.0f} s)")
    table = pilot_table(config, recipes, runs)
    table.update(base_val_acc=base_val, base_test_acc=base_test, base=str(trained["out"]),
                 sizes={"train": data.n_train, "val": data.n_val, "test": data.n_test},
                 precision=data.precision)
    write_report(out, config, table)
    return table


def pilot_table(config: PilotConfig, recipes: Sequence[dict[str, Any]],
                runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per t: τ-b against the long fine-tune's test drops (one seed, the seeds' mean, with
    bootstrap intervals), the seeds' τ with each other, the seed SD (pp) and seconds per run.

    Only recipes whose runs are all done count (a partial pilot gives a partial table).
    """

    done = [r["name"] for r in recipes
            if all(_key(r["name"], t, s) in runs for t, s in jobs(config))]
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"recipes": len(recipes), "complete": len(done), "rows": rows}
    if len(done) < 4:
        return {**out, "choice": None, "ceiling": None}
    long = np.array([runs[_key(n, LONG, config.long_seed)]["test_drop"] for n in done])
    long_val = np.array([runs[_key(n, LONG, config.long_seed)]["val_drop"] for n in done])

    def tau(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        t = unselected_fidelity(x, y, n_boot=config.n_boot, seed=config.seed).tau
        return {"tau": t.estimate, "lo": t.lo, "hi": t.hi}

    for t in config.epochs:
        drops = np.array([[runs[_key(n, t, s)]["val_drop"] for s in range(config.seeds)]
                          for n in done])  # (recipes, seeds)
        single = [tau(drops[:, s], long) for s in range(config.seeds)]
        rows.append({
            "epochs": t,
            "tau_one_seed": float(np.mean([x["tau"] for x in single])), "per_seed": single,
            "tau_mean": tau(drops.mean(1), long) if config.seeds > 1 else single[0],
            "tau_seeds": (tau(drops[:, 0], drops[:, 1]) if config.seeds > 1 else None),
            "seed_sd": (float(np.sqrt(np.mean(drops.var(1, ddof=1))))
                        if config.seeds > 1 else None),
            "spread_sd": float(drops.mean(1).std(ddof=1)),
            "seconds": float(np.mean([runs[_key(n, t, s)]["seconds"] for n in done
                                      for s in range(config.seeds)]))})
    out["long"] = {"epochs": config.long_epochs, "spread_sd": float(long.std(ddof=1)),
                   "range": [float(long.min()), float(long.max())],
                   "seconds": float(np.mean([runs[_key(n, LONG, config.long_seed)]["seconds"]
                                             for n in done]))}
    out["ceiling"] = tau(long_val, long)
    out["uniform_rank"] = _uniform_ranks(done, rows, runs, config, long)
    _versus_best(rows, done, runs, config, long)
    out["choice"] = choose(rows, config.tau_target)
    out["fidelity"] = multi_fidelity(config, done, runs, rows, long, long_val,
                                     out["long"]["seconds"])
    return out


REFERENCE_EPOCHS = 2  # ProxyConfig's default epochs: the policy the others are paired against


def multi_fidelity(config: PilotConfig, done: list[str], runs: dict[str, dict[str, Any]],
                   rows: list[dict[str, Any]], long: np.ndarray, long_val: np.ndarray,
                   long_seconds: float) -> dict[str, Any]:
    """Successive-halving policies over the pilot's t (evoprune.searching.fidelity), replayed on its runs;
    the long fine-tune's own validation (one seed) is the top rung, the fidelity ceiling."""

    drops = {t: np.array([[runs[_key(n, t, s)]["val_drop"] for s in range(config.seeds)]
                          for n in done]) for t in config.epochs}
    seconds = {r["epochs"]: r["seconds"] for r in rows}
    if config.long_epochs not in drops:
        drops[config.long_epochs] = long_val[:, None]
        seconds[config.long_epochs] = long_seconds
    reference = Policy((REFERENCE_EPOCHS,)) if REFERENCE_EPOCHS in drops else None
    policies = default_policies(sorted(drops))
    table = simulate(policies, drops, long, seconds=seconds, reference=reference,
                     n_boot=config.n_boot, seed=config.seed)
    return {"recipes": len(done), "reference": reference.label if reference else None,
            "rows": table, "random": random_regret(long, n_boot=config.n_boot, seed=config.seed),
            "best_test_drop": float(long.min()), "verdict": verdict(table)}


def _versus_best(rows: list[dict[str, Any]], done: list[str], runs: dict[str, dict[str, Any]],
                 config: PilotConfig, long: np.ndarray) -> None:
    """Add to each row its one-seed τ minus the best t's, with a paired bootstrap interval
    (the same recipes resampled for both t; level 95%): whether the data tell them apart."""

    idx = np.random.default_rng(config.seed).integers(0, len(done), (config.n_boot, len(done)))
    draws = {}
    for row in rows:
        t = row["epochs"]
        drops = np.array([[runs[_key(n, t, s)]["val_drop"] for s in range(config.seeds)]
                          for n in done])
        with warnings.catch_warnings():  # a draw of tied recipes has no τ: NaN, left out
            warnings.simplefilter("ignore", RuntimeWarning)
            draws[t] = np.nanmean([_kendall_tau_b(drops[idx, s], long[idx])
                                   for s in range(config.seeds)], axis=0)
    best = max(rows, key=lambda r: r["tau_one_seed"])
    for row in rows:
        diff = draws[row["epochs"]] - draws[best["epochs"]]
        lo, hi = np.nanquantile(diff, [0.025, 0.975]) if np.any(np.isfinite(diff)) else (
            np.nan, np.nan)
        row["vs_best"] = {"best": best["epochs"],
                          "diff": row["tau_one_seed"] - best["tau_one_seed"],
                          "lo": float(lo), "hi": float(hi)}


def _uniform_ranks(done: list[str], rows: list[dict[str, Any]], runs: dict[str, dict[str, Any]],
                   config: PilotConfig, long: np.ndarray) -> dict[str, int] | None:
    """The uniform recipe's rank (1 = smallest drop) by the long fine-tune and by each t."""
    if "uniform" not in done:
        return None
    i = done.index("uniform")
    ranks = {"long": int(np.sum(long < long[i]) + 1)}
    for row in rows:
        t = row["epochs"]
        mean = np.array([np.mean([runs[_key(n, t, s)]["val_drop"] for s in range(config.seeds)])
                         for n in done])
        ranks[str(t)] = int(np.sum(mean < mean[i]) + 1)
    return ranks


def choose(rows: Sequence[dict[str, Any]], target: float) -> dict[str, Any]:
    """The cheapest t whose one-seed τ reaches `target`; else, marked unreached, the cheapest t
    whose τ the data cannot tell from the best t's (the paired 95% interval of the difference
    reaches 0), or the best t where rows carry no such interval. Only fine-tunes (t ≥ 1) are
    candidates where there are any: t = 0 (adaptive BN only) is a rung's screen, judged by the
    multi-fidelity table, not a proxy on its own."""
    rows = [r for r in rows if r["epochs"] >= 1] or list(rows)
    ok = [r for r in rows if r["tau_one_seed"] >= target]
    if ok:
        best = min(ok, key=lambda r: r["seconds"])
        return {"epochs": best["epochs"], "reached": True, "tau": best["tau_one_seed"]}
    best = max(rows, key=lambda r: r["tau_one_seed"])
    level = [r for r in rows if r is best or ("vs_best" in r and r["vs_best"]["hi"] >= 0)]
    pick = min(level, key=lambda r: r["seconds"])
    return {"epochs": pick["epochs"], "reached": False, "tau": pick["tau_one_seed"],
            "best": best["epochs"], "best_tau": best["tau_one_seed"]}


def format_table(config: PilotConfig, table: dict[str, Any]) -> str:
    """The pilot's markdown table and verdict."""

    lines = [f"# Proxy pilot: {config.model} on {config.dataset}, c_flops {config.c_flops:g}", ""]
    if table["complete"] < table["recipes"]:
        lines += [f"**Partial: {table['complete']} of {table['recipes']} recipes done**; "
                  "`python scripts/proxy_pilot.py` resumes the rest.", ""]
    if table.get("choice") is None:
        return "\n".join([*lines, f"{table['complete']} of {table['recipes']} recipes done: "
                                      "too few to rank (at least 4)."])
    lines += [
        f"{table['complete']} of {table['recipes']} recipes ({config.per_space} drawn without "
        f"selection from each of {', '.join(config.spaces)}, plus the uniform one); each "
        f"fine-tuned (lr {config.lr:g}, cosine, batch {config.batch_size}) for t epochs with "
        f"{config.seeds} seeds, scored on validation, and for {config.long_epochs} epochs "
        f"(seed {config.long_seed}), scored on test. Kendall τ-b against the long fine-tune's "
        f"test drops, 95% bootstrap intervals over recipes ({config.n_boot} draws).", "",
        "| t (epochs) | τ, one seed | τ per seed | τ, mean of seeds | τ between seeds | "
        "seed SD (pp) | spread SD (pp) | s / fine-tune | τ − best t's τ (paired) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in table["rows"]:
        seeds = ", ".join(f"{x['tau']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}]" for x in r["per_seed"])
        m, b = r["tau_mean"], r["tau_seeds"]
        lines.append(
            f"| {r['epochs']} | {r['tau_one_seed']:.2f} | {seeds} | {m['tau']:.2f} "
            f"[{m['lo']:.2f}, {m['hi']:.2f}] | "
            + (f"{b['tau']:.2f}" if b else "–") + " | "
            + (f"{r['seed_sd']:.2f}" if r["seed_sd"] is not None else "–")
            + f" | {r['spread_sd']:.2f} | {r['seconds']:.1f} | " + _versus(r) + " |")
    c, lg = table["ceiling"], table["long"]
    choice = table["choice"]
    lines += [
        "",
        f"- the long fine-tune: test drops {lg['range'][0]:.2f} to {lg['range'][1]:.2f} pp "
        f"(SD {lg['spread_sd']:.2f}), {lg['seconds']:.0f} s each; its own validation against "
        f"its test ranks with τ {c['tau']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]: the ceiling "
        "that measurement noise leaves at this spread",
        f"- base accuracy {100 * table['base_val_acc']:.2f}% (validation), "
        f"{100 * table['base_test_acc']:.2f}% (test); {table['precision']}",
    ]
    if table.get("uniform_rank"):
        u = table["uniform_rank"]
        lines.append(f"- the uniform recipe ranks {u['long']} of {table['complete']} by the long "
                     "fine-tune; by t: " + ", ".join(f"{k}: {v}" for k, v in u.items()
                                                     if k != "long"))
    if choice["reached"]:
        lines.append(f"- **choice: t = {choice['epochs']}**, the cheapest with one-seed τ ≥ "
                     f"{config.tau_target:g} (τ {choice['tau']:.2f})")
    else:
        best = choice.get("best", choice["epochs"])
        lines.append(
            f"- **no t reaches one-seed τ ≥ {config.tau_target:g}**: the best is t = {best} "
            f"(τ {choice.get('best_tau', choice['tau']):.2f})"
            + (f"; **choice: t = {choice['epochs']}** (τ {choice['tau']:.2f}), the cheapest t "
               "whose τ the paired bootstrap cannot tell from the best's (the 95% interval of "
               "the difference reaches 0)" if choice["epochs"] != best else ""))
    if any(r["epochs"] == 0 for r in table["rows"]):
        lines.append("- t = 0 (adaptive BN only, no gradient step) is not a candidate proxy "
                     "on its own: it is the screen of a rung, judged in the multi-fidelity "
                     "table below")
    lines += _fidelity_lines(config, table.get("fidelity"))
    lines += ["", f"machine: {machine()}"]
    return "\n".join(lines) + "\n"


def _fidelity_lines(config: PilotConfig, fid: dict[str, Any] | None) -> list[str]:
    """The multi-fidelity section: each policy's selected recipe, regret and cost."""
    if not fid:
        return []
    ref = fid["reference"]
    lines = [
        "", "## Multi-fidelity: what successive halving over the rungs selects", "",
        f"Each policy replayed on the {fid['recipes']} recipes above (evoprune/searching/fidelity.py): "
        "every recipe measured at the first rung (t epochs; 0: adaptive BN only), the best "
        "ceil(keep · n) by validation drop promoted to the next rung (a fresh fine-tune of "
        "its t), the best at the last rung selected. One seed per recipe, the same at every "
        "rung, drawn at random (estimate: the mean over 64 draws). Regret: the selected "
        f"recipe's {config.long_epochs}-epoch test drop minus the best recipe's "
        f"({fid['best_test_drop']:.2f} pp); 95% intervals resample the recipes "
        f"({config.n_boot} draws); the last column is paired against {ref} (the default "
        f"proxy). t = {config.long_epochs} is the reference fine-tune's own validation "
        "(one seed): the ceiling of any proxy. Cost: fine-tune epochs per recipe (rung 0 "
        "counts none) and measured seconds per recipe. Top-3 regret: the mean test drop of "
        "the policy's 3 best (by the last rung reached, then its drop) minus the 3 best "
        "recipes' mean: what top-k retraining would read.", "",
        "| policy | recipes per rung | epochs / recipe | s / recipe | selected test drop (pp) "
        "| regret (pp) | P(best) | regret − " + str(ref) + "'s (paired) | top-3 regret (pp) "
        "| top-3 regret − " + str(ref) + "'s (paired) |",
        "|---|---|---:|---:|---:|---|---:|---|---|---|"]
    def paired(r: dict[str, Any], key: str) -> str:
        v = r.get(key)
        return ("reference" if v and r["policy"] == v["reference"] else
                f"{v['diff']:+.2f} [{v['lo']:+.2f}, {v['hi']:+.2f}]" if v else "–")

    for r in fid["rows"]:
        vs = paired(r, "vs_reference")
        lines.append(
            f"| {r['policy']} | {' → '.join(map(str, r['measured']))} | {r['epochs']:.2f} | "
            f"{r.get('seconds', float('nan')):.1f} | {r['test_drop']:.2f} | {r['regret']:.2f} "
            f"[{r['regret_lo']:.2f}, {r['regret_hi']:.2f}] | {r['p_best']:.2f} | {vs} | "
            f"{r['top_regret']:.2f} [{r['top_lo']:.2f}, {r['top_hi']:.2f}] | "
            f"{paired(r, 'top_vs_reference')} |")
    rnd, v = fid["random"], fid["verdict"]
    lines += [
        "",
        f"- a recipe picked at random (no proxy): regret {rnd['regret']:.2f} pp "
        f"[{rnd['regret_lo']:.2f}, {rnd['regret_hi']:.2f}]",
        f"- shown lower regret than {ref}: {'; '.join(v['better']) or 'none'}; shown higher: "
        f"{'; '.join(v['worse']) or 'none'}; every other difference: not shown",
        f"- top-3 regret shown lower than {ref}'s: {'; '.join(v['top_better']) or 'none'}; "
        f"shown higher: {'; '.join(v['top_worse']) or 'none'}; every other: not shown",
        f"- cheaper than {ref} and not shown worse: "
        f"{'; '.join(v.get('cheaper_not_shown_worse', [])) or 'none'}",
        f"- **the numbers support {v['supports']}**",
        "- the regret is measured against one seed of the long fine-tune, whose own seed SD is "
        "about 0.2 pp (issue 24): regrets and differences below about 0.3 pp are inside the "
        "reference's noise",
        f"- with {fid['recipes']} recipes of one regime, a search selecting among hundreds of "
        "trials is not replayed: these regrets rank the policies, they do not predict a "
        "search's"]
    return lines


def _versus(row: dict[str, Any]) -> str:
    """The row's τ difference from the best t's, with its interval ('best' for the best)."""
    v = row.get("vs_best")
    if v is None:
        return "–"
    if v["best"] == row["epochs"]:
        return "best"
    return f"{v['diff']:+.2f} [{v['lo']:+.2f}, {v['hi']:+.2f}]"


def write_report(out: Path, config: PilotConfig, table: dict[str, Any]) -> None:
    """pilot.json (the table) and pilot.md (its rendering) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "pilot.json").write_text(json.dumps({"config": asdict(config), **table}, indent=1)
                                    + "\n")
    (out / "pilot.md").write_text(format_table(config, table))


def fidelity_line(table: dict[str, Any], epochs: int) -> str:
    """One line on how faithful a proxy of `epochs` epochs was in a pilot's table (pilot.json)."""
    cfg = table.get("config", {})
    row = next((r for r in table.get("rows", []) if r["epochs"] == epochs), None)
    if row is None:
        return (f"the pilot measured t = {', '.join(str(r['epochs']) for r in table['rows'])} "
                f"epochs, not this proxy's {epochs}")
    c, m = table["ceiling"], row["tau_mean"]
    return (f"one-seed Kendall τ {row['tau_one_seed']:.2f} (the seeds' mean {m['tau']:.2f} "
            f"[{m['lo']:.2f}, {m['hi']:.2f}]) against a {cfg.get('long_epochs', '?')}-epoch "
            f"fine-tune's test drops on {table['complete']} recipes at c_flops "
            f"{cfg.get('c_flops', float('nan')):g}; that fine-tune's own validation reaches "
            f"{c['tau']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}] (the ceiling); seed SD "
            f"{row['seed_sd']:.2f} pp against a spread of {row['spread_sd']:.2f} pp")

