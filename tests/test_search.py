"""The search: trials inside the bands, the uniform baseline first, resume, bad input, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from evoprune.cli.commands import main
from evoprune.searching import BaseConfig, SamplerConfig, SearchConfig, prepare, run_search
from evoprune.searching.objective import ProxyConfig
from evoprune.searching.sampler import derive_seed, make_sampler, sampler_seed
from evoprune.spaces import PruningSpace

TRIAL_ATTRS = {"recipe", "channels", "flops", "params", "flops_ratio", "params_ratio", "mcb",
               "recipe_std", "val_acc", "val_drop", "seed", "proxy_seconds", "is_uniform"}
STUDY_ATTRS = {"config", "checkpoint", "base_val_acc", "base_test_acc", "split_sizes",
               "base_flops", "base_params", "units", "evoprune_version", "gene_names", "created",
               "schema"}
GENES = [f"g{i:03d} layer{1 + i // 3}.{i % 3}.conv1" for i in range(9)]  # g004 layer2.1.conv1
DIGITS_SPLITS = {"train": 1150, "val": 287, "test": 360}  # the default stratified split
TREE = {"base", "space", "proxy", "sampler", "objectives", "seed"}


def search_args(storage: str, ckpt: str, *extra: str) -> list[str]:
    """A fast search on digits: 1 proxy epoch, a 4-trial NSGA-II population."""
    return ["search", "--c-flops", "0.25", "--c-mcb", "1.0", "--checkpoint", ckpt,
            "--storage", storage, "--proxy-epochs", "1", "--population", "4",
            "--device", "cpu", "--baselines", "none", *extra]


def cli(argv: list[str]) -> int:
    """Run the CLI in-process; argparse's exit code too."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def load(storage: str, name: str = "resnet20-digits-mCB-1-f0.25") -> optuna.Study:
    """Load a study the search wrote (any storage kind)."""
    from evoprune.store.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


def test_search_fills_the_study_with_in_band_trials_and_the_uniform_baseline(tmp_path, base_ckpt,
                                                                             capsys):
    """6 COMPLETE trials, trials 0-1 uniform (one seed each), every recipe inside both bands,
    every attr stored; the mCB band fixes params, so val_drop is the one objective."""
    from evoprune.searching.objective import trial_seed

    storage = f"sqlite:///{tmp_path}/s.db"
    assert main(search_args(storage, base_ckpt, "--n-trials", "6", "--uniform-seeds", "2")) == 0
    out = capsys.readouterr()
    assert "open the dashboard:  optuna-dashboard " + storage in out.out
    assert "trial    5" in out.err and "best" in out.err
    study = load(storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert [t.user_attrs["is_uniform"] for t in trials] == [True, True] + [False] * 4
    assert set(study.user_attrs) == STUDY_ATTRS
    assert set(study.user_attrs["config"]) == TREE
    assert study.metric_names == ["val_drop"]
    assert study.user_attrs["config"]["space"]["c_mcb"] == 1.0
    assert study.user_attrs["schema"] == 3 and study.user_attrs["split_sizes"] == DIGITS_SPLITS
    assert study.user_attrs["gene_names"] == "unit"
    base_acc = study.user_attrs["base_val_acc"]
    assert 0.5 < base_acc <= 1.0 and 0.5 < study.user_attrs["base_test_acc"] <= 1.0
    # trial j fine-tunes with a seed of the study seed and j alone; the uniform ones differ
    assert [t.user_attrs["seed"] for t in trials] == [trial_seed(0, t.number) for t in trials]
    assert len({t.user_attrs["seed"] for t in trials}) == 6
    assert trials[0].user_attrs["channels"] == trials[1].user_attrs["channels"]
    assert trials[0].params == trials[1].params == {}  # the uniform recipe has no genotype
    for t in trials:
        a = t.user_attrs
        assert set(a) >= TRIAL_ATTRS, TRIAL_ATTRS - set(a)
        assert sorted(t.params) == ([] if a["is_uniform"] else GENES)  # named by their units
        assert abs(a["flops_ratio"] - 0.25) <= 0.002
        assert abs(a["mcb"] - 1.0) <= 0.1
        assert a["flops"] == round(a["flops_ratio"] * study.user_attrs["base_flops"])
        assert a["val_drop"] == pytest.approx(100 * (base_acc - a["val_acc"]))
        assert t.values == [a["val_drop"]]
        assert all(math.isfinite(v) for v in t.values)
        assert a["recipe_std"] == pytest.approx(float(np.std(a["recipe"])))
    # the uniform trials are uniform up to the rounding steps into the band
    assert max(t.user_attrs["recipe_std"] for t in trials[:2]) < 0.02 < min(
        t.user_attrs["recipe_std"] for t in trials[2:])


def test_rerun_continues_to_n_complete_with_new_genotypes(tmp_path, base_ckpt):
    """3 trials, then the same command with --n-trials 5: 5 COMPLETE, none repeated."""
    storage = f"sqlite:///{tmp_path}/s.db"
    assert main(search_args(storage, base_ckpt, "--n-trials", "3", "--uniform-seeds", "1")) == 0
    first = {t.number: t.values for t in load(storage).get_trials()}
    assert main(search_args(storage, base_ckpt, "--n-trials", "5", "--uniform-seeds", "1")) == 0
    trials = load(storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert {n: v for n, v in ((t.number, t.values) for t in trials) if n in first} == first
    genotypes = {tuple(sorted(t.params.items())) for t in trials}
    assert len(genotypes) == 5
    assert main(search_args(storage, base_ckpt, "--n-trials", "5", "--uniform-seeds", "1")) == 0
    assert len(load(storage).get_trials()) == 5


def test_seed_derivation_gives_each_trial_its_own_stream():
    """The sampler seed changes with the study seed and the trial number, and differs from the
    proxy fine-tune's seed of the same trial."""
    from evoprune.searching.objective import trial_seed

    seeds = {sampler_seed(s, n) for s in (0, 1) for n in range(50)}
    assert len(seeds) == 100
    assert sampler_seed(0, 3) == sampler_seed(0, 3) == derive_seed(0, 3, 1)
    assert not seeds & {trial_seed(s, n) for s in (0, 1) for n in range(50)}


def test_study_name_and_identity_follow_the_space():
    """The default study name and the resume identity carry model, dataset and space."""
    c = SearchConfig(space=PruningSpace(c_flops=0.1, c_std=0.05),
                     base=BaseConfig(model="resnet56", dataset="cifar10"))
    assert c.name() == "resnet56-cifar10-STD-0.05-f0.1"
    digits = SearchConfig(space=PruningSpace(c_flops=0.1))
    assert c.proxy.batch_size == 128 and digits.proxy.batch_size == 32
    assert c.identity()["space"]["c_std"] == 0.05
    assert c.identity()["base"] == {"model": "resnet56", "dataset": "cifar10", "residual": False,
                                    "val_size": 0.2, "train_size": None}
    assert SearchConfig(space=PruningSpace(c_flops=0.5), base=BaseConfig(residual=True)).name() \
        == "resnet20-digits-initial-f0.5-residual"


def test_resume_with_another_configuration_or_checkpoint_is_refused(tmp_path, base_ckpt, capsys):
    """Same study name, another space or checkpoint: exit 2 and the study is unchanged."""
    storage = f"sqlite:///{tmp_path}/s.db"
    args = search_args(storage, base_ckpt, "--n-trials", "2", "--uniform-seeds", "1",
                       "--study-name", "mine")
    assert main(args) == 0
    before = Path(tmp_path / "s.db").read_bytes()
    capsys.readouterr()
    other = [a if a != "1.0" else "0.9" for a in args]  # --c-mcb 0.9
    assert main([*other, "--n-trials", "3"]) == 2
    err = capsys.readouterr().err
    assert "exists with another configuration" in err and "c_mcb" in err
    assert len(err.strip().splitlines()) == 1
    assert main([*args, "--objectives", "val_drop,latency"]) == 2
    assert "exists with another configuration" in capsys.readouterr().err
    assert main([*args, "--val-size", "0.3"]) == 2  # trials scored on another validation split
    assert "base.val_size" in capsys.readouterr().err
    # a checkpoint with other weights (and so another sha256)
    import torch

    from evoprune.core.checkpoint import load_file

    state = load_file(base_ckpt)
    state["state_dict"] = {k: v + 1 if v.is_floating_point() else v
                           for k, v in state["state_dict"].items()}
    other_ckpt = tmp_path / "other.pt"
    torch.save(state, other_ckpt)
    capsys.readouterr()
    swapped = [str(other_ckpt) if a == base_ckpt else a for a in args]
    assert main(swapped) == 2
    assert "another checkpoint" in capsys.readouterr().err
    assert Path(tmp_path / "s.db").read_bytes() == before
    assert len(load(storage, "mine").get_trials()) == 2


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    """A digitsnet checkpoint given to a resnet20 search: exit 2, one line, nothing written."""
    from evoprune.training.base import TrainJob, run_train

    ckpt = tmp_path / "dn.pt"
    run_train(TrainJob(model="digitsnet", epochs=1, out=str(ckpt), device="cpu"))
    storage = tmp_path / "s.db"
    assert main(search_args(f"sqlite:///{storage}", str(ckpt))) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "evoprune search: error" in err
    assert not storage.exists()


def test_nan_and_unrepairable_trials_fail_with_reasons_and_the_study_goes_on(tmp_path, base_ckpt,
                                                                              monkeypatch):
    """A planted NaN in trial 1 fails it (reason stored, no value); the others complete."""
    import evoprune.searching.objective as train  # where trials call fit
    from evoprune.errors import NonFiniteLossError

    real_fit = train.fit
    calls = {"n": 0}

    def flaky_fit(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise NonFiniteLossError("non-finite loss (nan) at epoch 1, step 3")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", flaky_fit)
    storage = f"sqlite:///{tmp_path}/s.db"
    config = SearchConfig(space=PruningSpace(c_flops=0.25, c_mcb=1.0),
                          base=BaseConfig(checkpoint=base_ckpt), proxy=ProxyConfig(epochs=1),
                          sampler=SamplerConfig(population=4), storage=storage, n_trials=3,
                          uniform_seeds=1, device="cpu", baselines=())
    result = run_search(config)
    assert result["states"] == {"COMPLETE": 3, "FAIL": 1}
    failed = [t for t in load(storage).get_trials() if t.state == TrialState.FAIL]
    assert failed[0].number == 1 and failed[0].values is None
    assert "non-finite loss" in failed[0].user_attrs["fail_reason"]
    assert failed[0].user_attrs["flops_ratio"] == pytest.approx(0.25, abs=0.002)


@pytest.mark.slow  # CI's 15-minute budget; -m slow runs it
def test_screen_prunes_weak_trials_and_keeps_counting_complete_ones(tmp_path, base_ckpt):
    """With --screen adaptive-bn the study still ends with n COMPLETE; screened trials PRUNED."""
    storage = f"sqlite:///{tmp_path}/s.db"
    assert main(search_args(storage, base_ckpt, "--n-trials", "8", "--screen", "adaptive-bn",
                            "--screen-keep", "0.3", "--sampler", "random")) == 0
    trials = load(storage).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) == 8
    assert all("screen_acc" in t.user_attrs for t in trials)
    assert all(t.params == {} for t in trials)  # the random sampler draws recipes: no genes
    assert sum(bool(t.user_attrs.get("is_uniform")) for t in trials) == 3  # uniform_seeds
    assert all(t.user_attrs.get("screened_out") for t in pruned)
    assert len(pruned) >= 1


def test_export_a_winner_with_prune_study_recipe(tmp_path, base_ckpt, capsys):
    """`evoprune prune --recipe study:NAME:N --out F` rebuilds the trial's exact network."""
    from evoprune import load_pruned
    from evoprune.network.cost import params_of

    storage = f"sqlite:///{tmp_path}/s.db"
    assert main(search_args(storage, base_ckpt, "--n-trials", "2", "--uniform-seeds", "1")) == 0
    trial = load(storage).get_trials()[1]
    capsys.readouterr()
    out = tmp_path / "best.pt"
    assert main(["prune", "--storage", storage, "--recipe",
                 f"study:resnet20-digits-mCB-1-f0.25:{trial.number}", "--out", str(out),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["channels"] == trial.user_attrs["channels"]
    assert r["params"] == trial.user_attrs["params"] == params_of(load_pruned(out))


def test_prepare_records_the_checkpoint_hash(tmp_path, base_ckpt):
    """Study attrs name the checkpoint file (relative to the storage's folder) and its sha256."""
    import os

    from evoprune.core.checkpoint import sha256_of

    storage = f"sqlite:///{tmp_path}/s.db"
    config = SearchConfig(space=PruningSpace(c_flops=0.5), base=BaseConfig(checkpoint=base_ckpt),
                          storage=storage, device="cpu", baselines=())
    prepared = prepare(config)
    attrs = load(storage, prepared.study).user_attrs
    assert attrs["checkpoint"] == {"path": os.path.relpath(base_ckpt, tmp_path),  # beside it
                                   "sha256": sha256_of(base_ckpt), "relative_to": "storage"}
    assert attrs["schema"] == 3 and attrs["config"] == config.stored_tree()
    assert attrs["split_sizes"] == DIGITS_SPLITS and attrs["config"]["base"]["val_size"] == 0.2
    # the base is read on the 287 validation images and, once, on the 360 test images
    assert prepared.base_acc == attrs["base_val_acc"]
    assert attrs["base_val_acc"] * 287 == pytest.approx(round(attrs["base_val_acc"] * 287))
    assert attrs["base_test_acc"] * 360 == pytest.approx(round(attrs["base_test_acc"] * 360))
    assert [t.user_attrs["is_uniform"] for t in load(storage, prepared.study).get_trials()] == \
        [True] * 3  # the default uniform_seeds, enqueued
    assert load(storage, prepared.study).metric_names == ["val_drop", "params"]
    assert prepared.complete == 0 and prepared.context is not None
    assert next(u["name"] for u in attrs["units"]) == "layer1.0.conv1"


def _same_genotype_pairs(trials: list) -> list[tuple[int, int]]:
    """Pairs of trial numbers with identical genotypes."""
    seen: dict[tuple, int] = {}
    pairs = []
    for t in trials:
        key = tuple(sorted(t.params.items()))
        if key in seen:
            pairs.append((seen[key], t.number))
        else:
            seen[key] = t.number
    return pairs


def test_sampler_never_repeats_a_stored_genotype():
    """NSGA-II alone copies parents unchanged; the wrapped sampler never repeats a genotype."""
    import optuna

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        g = [trial.suggest_float(f"g{i:03d}", 0.0, 1.0) for i in range(3)]
        return g[0] + g[1], g[2] - g[1]

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    counts = []
    for sampler in (optuna.samplers.NSGAIISampler(population_size=4, seed=1),
                    make_sampler(SamplerConfig(population=4), 1)):
        study = optuna.create_study(directions=["minimize"] * 2, sampler=sampler)
        study.optimize(objective, n_trials=60)
        counts.append(len(_same_genotype_pairs(study.get_trials())))
    assert counts[0] > 0
    assert counts[1] == 0


def test_bench_search_splits_a_trial_into_training_and_overhead(capsys):
    """The benchmark's stages add up to the trial and its table states the machine."""
    assert main(["bench", "search", "--cases", "resnet20-digits", "--n-trials", "2",
                 "--device", "cpu", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    parts = (row["train_eval_s"] + row["decode_s"] + row["prune_s"] + row["params_write_s"]
             + row["attrs_write_s"] + row["ask_tell_s"])
    assert parts == pytest.approx(row["trial_s"], rel=1e-9)
    assert 0 < row["overhead_pct"] < 100 and row["units"] == 9 and row["n_train"] == 1150
    assert "cores" in row["machine"]
    from evoprune.bench.suite import format_search_rows

    assert "resnet20-digits" in format_search_rows([row])


def test_a_search_whose_trials_all_fail_stops_with_one_line(tmp_path, base_ckpt, monkeypatch,
                                                            capsys):
    """Every fine-tune diverges: after MAX_FAILS_IN_A_ROW failures, exit 2 with the reason."""
    import evoprune.searching.objective as train  # where trials call fit
    import evoprune.searching.worker as search
    from evoprune.errors import NonFiniteLossError

    def diverge(*args, **kwargs):
        raise NonFiniteLossError("non-finite loss (inf) at epoch 1, step 1")

    monkeypatch.setattr(train, "fit", diverge)
    monkeypatch.setattr(search, "MAX_FAILS_IN_A_ROW", 3)
    storage = f"sqlite:///{tmp_path}/s.db"
    assert main(search_args(storage, base_ckpt, "--n-trials", "4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("evoprune search: error: 3 trials in a row failed (last: non-finite")
    assert [t.state for t in load(storage).get_trials()] == [TrialState.FAIL] * 3


def test_waiting_worker_retries_the_trial_of_a_worker_that_died(tmp_path, base_ckpt):
    """Last trial held by a dead worker: a live worker fails and retries it instead of waiting."""
    import socket
    import subprocess
    import sys

    from evoprune.searching.objective import trial_seed
    from evoprune.searching.worker import run_worker
    from evoprune.store.storage import retried_from

    storage = f"journal:{tmp_path}/s.log"
    config = SearchConfig(space=PruningSpace(c_flops=0.25, c_mcb=1.0),
                          base=BaseConfig(checkpoint=base_ckpt), proxy=ProxyConfig(epochs=1),
                          sampler=SamplerConfig(population=4), storage=storage, n_trials=2,
                          uniform_seeds=1, device="cpu", n_workers=2, baselines=())
    prepare(config)
    study = load(storage)
    held = study.ask()  # the uniform trial, now RUNNING for a process that is gone
    assert held.user_attrs["is_uniform"] and held.params == {}
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    held.set_user_attr("worker", {"host": socket.gethostname(), "pid": int(dead), "index": 1})
    result = run_worker(config, base_ckpt, 0)  # trial 1, then the dead one is all that is left
    trials = load(storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert result["trials_run"] == 2
    assert retried_from(trials[2]) == 0 and trials[2].user_attrs["is_uniform"] is True
    assert not trials[1].user_attrs["is_uniform"]
    assert trials[2].params == trials[0].params
    assert trials[2].user_attrs["seed"] == trial_seed(0, 0) != trial_seed(0, 2)  # as trial 0's
    assert trials[1].user_attrs["seed"] == trial_seed(0, 1)
    assert "worker process died" in trials[0].user_attrs["fail_reason"]
