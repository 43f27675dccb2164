"""The search's sampler: the uniform baseline kept out by Optuna's own bookkeeping, a stream per
trial, the named sampler."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from evoprune.searching.config import SamplerConfig
from evoprune.searching.sampler import make_sampler, sampler_seed, searched_space
from evoprune.store import optuna_compat as compat
from evoprune.store.storage import open_storage

GENES = 3


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    """A two-objective toy: the uniform baseline (no genes) scores best on both."""
    if trial.user_attrs.get("is_uniform"):
        return -10.0, -10.0
    g = [trial.suggest_float(f"g{i:03d}", 0.0, 1.0) for i in range(GENES)]
    return g[0] + g[1], g[2] - g[1]


def _search(storage: Any, name: str, sampler: str, n: int, seed: int = 1) -> optuna.Study:
    """A study of `n` trials whose first two are the uniform baseline, as create_study makes."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize"] * 2,
                                sampler=make_sampler(SamplerConfig(sampler, population=4), seed),
                                load_if_exists=True)
    left = n - len(study.trials)
    if not study.trials:
        for _ in range(2):
            study.enqueue_trial({}, user_attrs={"is_uniform": True})
    study.optimize(_objective, n_trials=left)
    return study


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_nsga2_never_breeds_from_the_uniform_baseline(kind, tmp_path):
    """On every storage: the uniform trials (best on both objectives) get no generation and are
    never parents, while the searched trials make 5 generations with parents among them."""
    storage = {"memory": None, "sqlite": f"sqlite:///{tmp_path}/s.db",
               "journal": f"journal:{tmp_path}/s.log"}[kind]
    study = _search(storage and open_storage(storage), "n", "nsga2", 22)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 22
    assert [compat.nsga2_generation(t) for t in trials[:2]] == [None, None]
    generations = [compat.nsga2_generation(t) for t in trials[2:]]
    assert generations == sorted(generations) and set(generations) == set(range(5))
    parents = compat.nsga2_parent_numbers(study)
    assert parents and min(parents) >= 2
    assert all(t.params == {} for t in trials[:2])
    assert all(sorted(t.params) == ["g000", "g001", "g002"] for t in trials[2:])


def test_the_search_space_leaves_the_uniform_baseline_out():
    """Genes enter the space once a searched trial completes; uniform trials never empty it."""
    study = _search(None, "s", "random", 2)
    assert searched_space(study) == {}
    study.optimize(_objective, n_trials=1)
    assert sorted(searched_space(study)) == ["g000", "g001", "g002"]


def test_tpe_models_only_the_searched_trials():
    """TPE's multivariate sample reads trials holding every gene: the uniform ones are ignored,
    so its proposals do not crowd around them (the toy's optimum is g0 = g1 = 0, g2 = 0)."""
    study = _search(None, "t", "tpe", 30)
    assert [t.params for t in study.trials[:2]] == [{}, {}]
    assert len({tuple(sorted(t.params.items())) for t in study.trials[2:]}) == 28


def test_racing_processes_draw_different_streams(tmp_path):
    """Two samplers of one study seed (two processes started together) give trial j the same
    stream only if j is the same: they never repeat each other's first generation."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    a = optuna.create_study(study_name="r", storage=storage, directions=["minimize"] * 2,
                            sampler=make_sampler(SamplerConfig(population=4), 7))
    b = optuna.load_study(study_name="r", storage=storage,
                          sampler=make_sampler(SamplerConfig(population=4), 7))
    for _ in range(4):  # interleaved as two workers would be
        a.optimize(_objective, n_trials=1)
        b.optimize(_objective, n_trials=1)
    genotypes = [tuple(sorted(t.params.items())) for t in a.get_trials()]
    assert len(set(genotypes)) == 8
    assert len({sampler_seed(7, n) for n in range(8)}) == 8


def test_a_resumed_study_draws_what_an_uninterrupted_one_would(tmp_path):
    """Trial j's genotype depends on the study seed and j, not on which process drew it."""
    whole = _search(open_storage(f"sqlite:///{tmp_path}/a.db"), "w", "nsga2", 14, seed=3)
    url = f"sqlite:///{tmp_path}/b.db"
    _search(open_storage(url), "w", "nsga2", 7, seed=3)
    resumed = _search(open_storage(url), "w", "nsga2", 14, seed=3)  # a new process, same seed
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]


def test_make_sampler_names_the_inner_sampler():
    """nsga2, tpe and random wrap Optuna's samplers of those names."""
    kinds = {"nsga2": optuna.samplers.NSGAIISampler, "tpe": optuna.samplers.TPESampler,
             "random": optuna.samplers.RandomSampler}
    for name, cls in kinds.items():
        assert isinstance(make_sampler(SamplerConfig(name=name), 1).inner, cls)
