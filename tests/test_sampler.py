"""The search's sampler: it never learns from the uniform baseline; the named sampler."""

from __future__ import annotations

from typing import Any

import optuna

from evoprune.searching.config import SamplerConfig
from evoprune.searching.sampler import DistinctSampler, make_sampler


class Recorder(optuna.samplers.RandomSampler):
    """A random sampler that records which trials every call could read."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: set[int] = set()

    def _look(self, study: Any) -> None:
        self.seen |= {t.number for t in study.get_trials(deepcopy=False)}
        self.seen |= {t.number for t in study._get_trials(deepcopy=False, use_cache=False)}

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
        self._look(study)
        return super().infer_relative_search_space(study, trial)

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        self._look(study)
        return super().sample_independent(study, trial, name, dist)


def test_the_inner_sampler_never_reads_the_uniform_baseline():
    """Trials 0-2 (the uniform baseline, one per seed, whose genes are not its recipe) are
    hidden; the rest not."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    recorder = Recorder()
    study = optuna.create_study(sampler=DistinctSampler(recorder, 0))
    for _ in range(3):  # uniform_seeds 3: the same genes, enqueued three times
        study.enqueue_trial({"g000": 0.5, "g001": 0.5}, user_attrs={"is_uniform": True})
    study.optimize(lambda t: t.suggest_float("g000", 0, 1) + t.suggest_float("g001", 0, 1),
                   n_trials=10)
    assert recorder.seen == set(range(3, 10))
    assert [bool(t.user_attrs.get("is_uniform")) for t in study.trials] == [True] * 3 + [False] * 7
    assert all(t.params == {"g000": 0.5, "g001": 0.5} for t in study.trials[:3])


def test_make_sampler_names_the_inner_sampler():
    """nsga2, tpe and random wrap Optuna's samplers of those names."""
    kinds = {"nsga2": optuna.samplers.NSGAIISampler, "tpe": optuna.samplers.TPESampler,
             "random": optuna.samplers.RandomSampler}
    for name, cls in kinds.items():
        assert isinstance(make_sampler(SamplerConfig(name=name), 1).inner, cls)
