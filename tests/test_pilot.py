"""The proxy pilot: its table on runs whose truth is known, its choice, resuming, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evoprune.errors import EvopruneError
from evoprune.experiments.pilot import (
    LONG,
    PilotConfig,
    choose,
    jobs,
    pilot_table,
    read_runs,
    run_pilot,
)


def _runs(config: PilotConfig, names: list[str], noise: dict[int, float], seed: int = 0):
    """Runs whose proxy drop at t is the long drop plus N(0, noise[t]²) per seed."""
    rng = np.random.default_rng(seed)
    truth = {n: float(v) for n, v in zip(names, np.linspace(1, 8, len(names)))}
    runs = {}
    for n in names:
        for t, s in jobs(config):
            if t == LONG:
                row = {"val_drop": truth[n] + rng.normal(0, 0.1), "test_drop": truth[n]}
            else:
                row = {"val_drop": truth[n] + rng.normal(0, noise[t])}
            runs[f"{n}|{t}|{s}"] = {**row, "seconds": 2.0 * (t if t != LONG else 20)}
    return runs


def test_table_ranks_and_chooses_the_cheapest_faithful_proxy():
    config = PilotConfig(epochs=(1, 2, 4), n_boot=200)
    names = [f"r{i}" for i in range(17)]
    recipes = [{"name": n} for n in names]
    table = pilot_table(config, recipes, _runs(config, names, {1: 20.0, 2: 0.3, 4: 0.05}))
    by_t = {r["epochs"]: r for r in table["rows"]}
    assert table["complete"] == 17 and table["ceiling"]["tau"] > 0.9
    assert abs(by_t[1]["tau_one_seed"]) < 0.45  # noise SD 20 pp over a 7 pp spread: no ranking
    assert by_t[2]["tau_one_seed"] > 0.75 and by_t[4]["tau_one_seed"] > 0.9
    assert by_t[2]["per_seed"][0]["lo"] <= by_t[2]["per_seed"][0]["tau"] <= 1.0
    assert 0.2 < by_t[2]["seed_sd"] < 0.45 and 15 < by_t[1]["seed_sd"] < 26
    assert by_t[4]["seconds"] == 8.0 and table["long"]["seconds"] == 40.0
    assert table["choice"] == {"epochs": 2, "reached": True, "tau": by_t[2]["tau_one_seed"]}


def test_choose_says_when_no_proxy_reaches_the_target():
    rows = [{"epochs": 1, "tau_one_seed": 0.3, "seconds": 1.0},
            {"epochs": 2, "tau_one_seed": 0.5, "seconds": 2.0},
            {"epochs": 4, "tau_one_seed": 0.45, "seconds": 4.0}]
    assert choose(rows, 0.6) == {"epochs": 2, "reached": False, "tau": 0.5, "best": 2,
                                 "best_tau": 0.5}  # no paired intervals: the best t
    assert choose(rows, 0.4)["epochs"] == 2 and choose(rows, 0.25)["epochs"] == 1
    rows[0]["vs_best"] = {"best": 2, "diff": -0.2, "lo": -0.5, "hi": 0.1}  # cannot tell apart
    rows[2]["vs_best"] = {"best": 2, "diff": -0.05, "lo": -0.2, "hi": 0.1}
    assert choose(rows, 0.6) == {"epochs": 1, "reached": False, "tau": 0.3, "best": 2,
                                 "best_tau": 0.5}
    rows[0]["vs_best"]["hi"] = -0.01  # t = 1 significantly worse: the next cheapest level one
    assert choose(rows, 0.6)["epochs"] == 2


def test_an_unreached_target_picks_the_cheapest_t_the_data_cannot_tell_from_the_best():
    """Equal noise at every t: the paired intervals of τ − best τ reach 0, so the cheapest t;
    a useless t = 1 (noise 20 pp over a 7 pp spread) is significantly worse and not chosen."""
    config = PilotConfig(epochs=(1, 2, 4), n_boot=400, tau_target=0.99)
    names = [f"r{i}" for i in range(17)]
    recipes = [{"name": n} for n in names]
    same = pilot_table(config, recipes, _runs(config, names, {1: 1.5, 2: 1.5, 4: 1.5}, seed=3))
    assert all(r["vs_best"]["lo"] <= 0 <= r["vs_best"]["hi"] for r in same["rows"])
    assert same["choice"]["epochs"] == 1 and not same["choice"]["reached"]
    useless = pilot_table(config, recipes, _runs(config, names, {1: 20.0, 2: 0.6, 4: 0.3}))
    by_t = {r["epochs"]: r["vs_best"] for r in useless["rows"]}
    assert by_t[1]["hi"] < 0 and by_t[1]["best"] == 4 and by_t[4]["diff"] == 0.0
    assert useless["choice"]["epochs"] in (2, 4) and useless["choice"]["best"] == 4


def test_partial_runs_count_only_finished_recipes():
    config = PilotConfig(epochs=(1, 2), n_boot=50)
    names = [f"r{i}" for i in range(6)]
    runs = _runs(config, names, {1: 0.5, 2: 0.5})
    del runs["r5|2|1"]
    table = pilot_table(config, [{"name": n} for n in names], runs)
    assert table["complete"] == 5 and len(table["rows"]) == 2
    few = {k: v for k, v in runs.items() if k.startswith(("r0", "r1", "r2"))}
    assert pilot_table(config, [{"name": n} for n in names], few)["choice"] is None


def test_configs_a_pilot_cannot_use_are_refused():
    with pytest.raises(EvopruneError, match="std:X or mcb:X"):
        PilotConfig(spaces=("std:0.1", "wide:2"))
    with pytest.raises(EvopruneError, match="at least 4 drawn recipes"):
        PilotConfig(spaces=("std:0.1",), per_space=3)
    with pytest.raises(EvopruneError, match="at least 0"):
        PilotConfig(epochs=(-1, 2))
    assert PilotConfig(epochs=(0, 2)).epochs == (0, 2)  # t = 0: adaptive BN only


def test_run_resumes_and_refuses_another_pilots_folder(tmp_path, monkeypatch,
                                                      fashion_files):
    monkeypatch.chdir(tmp_path)  # the base is cached under ./studies/checkpoints
    fashion_files(tmp_path / "fm", n_train=240, n_test=60)
    config = PilotConfig(data_root=str(tmp_path / "fm"), val_size=40, train_size=120,
                         base_epochs=1, spaces=("std:0.1", "mcb:1.0"), per_space=2,
                         epochs=(1,), seeds=2, long_epochs=1, precision="fp32", n_boot=50,
                         out=str(tmp_path / "pilot"))
    lines: list[str] = []
    table = run_pilot(config, progress=lines.append)
    runs = read_runs(tmp_path / "pilot" / "runs.jsonl")
    assert len(runs) == 5 * 3 and table["complete"] == 5 and len(table["rows"]) == 1
    assert all(r["precision"] == "fp32" for r in runs.values())
    long = [r for r in runs.values() if r["t"] == LONG]
    assert len(long) == 5 and all(0 <= r["test_acc"] <= 1 for r in long)
    saved = json.loads((tmp_path / "pilot" / "pilot.json").read_text())
    assert saved["complete"] == 5 and "choice" in saved
    assert (tmp_path / "pilot" / "pilot.md").read_text().startswith("# Proxy pilot")
    lines.clear()
    run_pilot(config, progress=lines.append)
    assert any("15 of 15 fine-tunes done, 0 to run" in line for line in lines)
    assert len(read_runs(tmp_path / "pilot" / "runs.jsonl")) == 15
    lines_before = (tmp_path / "pilot" / "runs.jsonl").read_text().splitlines()
    (tmp_path / "pilot" / "runs.jsonl").write_text("\n".join(lines_before[:9]) + "\n")
    partial = run_pilot(config, report_only=True)  # 3 of 5 recipes: no run, a partial table
    assert partial["complete"] == 3 and partial["choice"] is None
    assert len(read_runs(tmp_path / "pilot" / "runs.jsonl")) == 9
    assert "Partial: 3 of 5 recipes" in (tmp_path / "pilot" / "pilot.md").read_text()
    other = PilotConfig(**{**config.__dict__, "c_flops": 0.25})
    with pytest.raises(EvopruneError, match="holds another pilot's runs"):
        run_pilot(other)



@pytest.mark.slow  # a base and 15 tiny fine-tunes: about 8 s on 2 cores
def test_adding_t0_resumes_the_folder_with_its_own_recipes(tmp_path, monkeypatch, fashion_files):
    """t = 0 (adaptive BN only) added to a pilot's epochs runs only the new runs; the folder's
    stored recipes are kept even where this code's sampler would draw others."""
    import functools

    import evoprune.training.engine

    monkeypatch.chdir(tmp_path)  # 2 calibration batches, not 50: seconds, not a minute
    monkeypatch.setattr(evoprune.training.engine, "adaptive_bn",
                        functools.partial(evoprune.training.engine.adaptive_bn, batches=2))
    fashion_files(tmp_path / "fm", n_train=240, n_test=60)
    config = PilotConfig(data_root=str(tmp_path / "fm"), val_size=40, train_size=120,
                         base_epochs=1, spaces=("std:0.1", "mcb:1.0"), per_space=2,
                         epochs=(1,), seeds=1, long_epochs=1, precision="fp32", n_boot=50,
                         out=str(tmp_path / "pilot"))
    run_pilot(config)
    meta_path = tmp_path / "pilot" / "pilot_config.json"
    meta = json.loads(meta_path.read_text())
    meta["recipes"][2]["recipe"][0] += 1e-3  # as if an older sampler had drawn it
    meta_path.write_text(json.dumps(meta))
    more = PilotConfig(**{**config.__dict__, "epochs": (0, 1)})
    lines: list[str] = []
    table = run_pilot(more, progress=lines.append)
    assert any("10 of 15 fine-tunes done, 5 to run" in line for line in lines)
    assert any("this code's sampler draws others" in line for line in lines)
    zero = [r for r in read_runs(tmp_path / "pilot" / "runs.jsonl").values() if r["t"] == 0]
    assert len(zero) == 5 and all(r["epochs"] == 0 and 0 <= r["val_acc"] <= 1 for r in zero)
    assert [r["epochs"] for r in table["rows"]] == [0, 1] and table["complete"] == 5
    stored = json.loads(meta_path.read_text())
    assert stored["config"]["epochs"] == [0, 1] and stored["recipes"] == meta["recipes"]
    assert table["fidelity"]["rows"][0]["policy"] == "t = 0"
    renamed = PilotConfig(**{**config.__dict__, "seed": 5})
    with pytest.raises(EvopruneError, match="differs in more than `epochs`"):
        run_pilot(renamed)


def test_the_reproduction_quotes_the_committed_pilot_for_its_proxy(tmp_path):
    """The fashion set's report quotes its pilot's τ for the proxy's epochs; none without one."""
    from pathlib import Path

    from evoprune.experiments.pilot import fidelity_line
    from evoprune.experiments.reproduce import _pilot

    folder = Path(__file__).resolve().parents[1] / "studies" / "fashion-mnist"
    line = _pilot(folder, 1)
    assert line.startswith("one-seed Kendall τ 0.49 (the seeds' mean 0.50 [0.18, 0.76])")
    assert "on 17 recipes at c_flops 0.1" in line and "reaches 0.70 [0.40, 0.93]" in line
    table = json.loads((folder / "pilot" / "pilot.json").read_text())
    assert fidelity_line(table, 3) == ("the pilot measured t = 0, 1, 2, 4, 8 epochs, not this "
                                       "proxy's 3")
    zero = next(r for r in table["rows"] if r["epochs"] == 0)  # adaptive BN only: rung 0
    assert zero["seconds"] < 10 and table["choice"]["epochs"] == 1
    fid = table["fidelity"]
    assert fid["recipes"] == 17 and fid["reference"] == "t = 2"
    assert {r["policy"] for r in fid["rows"]} >= {"t = 0", "0→1→4, keep 1/2", "t = 20"}
    assert _pilot(tmp_path, 1) is None
