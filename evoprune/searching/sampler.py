"""The sampler: choice by name, a stream per trial, no repeated genotype, the uniform trial unseen.

The study's uniform baseline (trials 0, 1, …) is the band's uniform recipe, which lies outside
the STD and mCB spaces, so no genotype describes it: it is enqueued with no genes at all. The
inner sampler then leaves it out through Optuna's own bookkeeping, with no view of the study:
NSGA-II's populations are the COMPLETE trials that carry its generation key, which only
`sample_relative` gives and never gives a uniform trial; TPE models only the trials holding every
gene of the search space; and the search space is the intersection (Optuna's public
`intersection_search_space`) over the trials that are not uniform. Studies stored before this
change hold genes 0.5 on their uniform trials: NSGA-II never gave those a generation either.

Heuristic baselines (`searching.baselines`) are enqueued the same way, with no genes, in the
paper's spaces, where they are labelled comparators. In the wide space (the FLOPs band alone)
they are the warm start: enqueued with genes that decode to them, and given generation 0 in
`before_trial` (an enqueued trial's fixed genes never reach `sample_relative`), so NSGA-II
ranks them with its first population and breeds from the best.

Each trial's sampler is seeded from the study seed and the trial's own number
(`sampler_seed`), so processes racing on one storage never draw the same stream, and a resumed
study draws what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler, NSGAIISampler
from optuna.search_space import intersection_search_space
from optuna.trial import TrialState

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from evoprune.searching.config import SamplerConfig

REDRAWS = 8  # redraws of a repeated genotype before one gene is mutated instead
SAMPLER_STREAM = 1  # the stream index of `sampler_seed` (0 is the proxy fine-tune's, trial_seed)


def derive_seed(seed: int, n_stored: int, worker: int) -> int:
    """A seed from the user's seed and two counters (SeedSequence: independent streams)."""
    return int(np.random.SeedSequence([seed, n_stored, worker]).generate_state(1)[0])


def sampler_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial `number` of a study seeded `seed` (one stream per trial)."""
    return derive_seed(seed, number, SAMPLER_STREAM)


def is_uniform(trial: FrozenTrial) -> bool:
    """Whether a trial is the study's uniform baseline."""
    return bool(trial.user_attrs.get("is_uniform"))


def is_fixed(trial: FrozenTrial) -> bool:
    """Whether a trial's recipe is given, not sampled: the uniform one, or a gene-less baseline.

    A baseline enqueued with genes (the wide space's warm start) is a searched trial: NSGA-II
    gives it a generation and may breed from it.
    """
    fixed = trial.system_attrs.get("fixed_params") or trial.params
    return is_uniform(trial) or (trial.user_attrs.get("role") == "baseline" and not fixed)


def searched_space(study: Study) -> dict[str, BaseDistribution]:
    """The genes every COMPLETE trial but the uniform baseline holds (none varying: left out)."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if not is_fixed(t)]
    space = intersection_search_space(trials) if trials else {}
    return {name: d for name, d in sorted(space.items()) if not d.single()}


def is_warm_start(trial: FrozenTrial) -> bool:
    """Whether a trial is a baseline enqueued with genes: a parent NSGA-II may breed from."""
    return trial.user_attrs.get("role") == "baseline" and bool(
        trial.system_attrs.get("fixed_params"))


class DistinctSampler(BaseSampler):
    """A fresh inner sampler per trial, seeded by the trial's number; never repeat a genotype.

    NSGA-II copies a parent unchanged when crossover is skipped and no gene mutates (a few % of
    children with 9 genes): such a copy would spend a trial on a network already measured.
    Retries of failed trials and the uniform baseline are enqueued, not sampled.
    """

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int) -> None:
        self._factory = factory
        self._seed = seed
        self._reseed(None)

    def _reseed(self, number: int | None) -> None:
        """The inner sampler and mutation stream of trial `number` (None: before any trial)."""
        stream = sampler_seed(self._seed, number) if number is not None else self._seed
        self.inner = self._factory(stream)
        self._rng = np.random.default_rng(stream)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        """The genes of the searched (non-uniform) trials."""
        return searched_space(study)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The inner sample, redrawn (then one gene mutated) while it repeats a stored one."""
        if is_fixed(trial):  # never asks the inner sampler: NSGA-II gives it no generation
            return {}
        params = self.inner.sample_relative(study, trial, search_space)
        if not params:
            return params
        seen = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)
                if t.number != trial.number}
        for _ in range(REDRAWS):
            if tuple(sorted(params.items())) not in seen:
                return params
            params = self.inner.sample_relative(study, trial, search_space)
        params = dict(params)  # still a copy: mutate one gene uniformly
        gene = sorted(params)[int(self._rng.integers(len(params)))]
        params[gene] = float(self._rng.random())
        return params

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """The inner sampler's independent sample."""
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Seed this trial's inner sampler from its number, then forward."""
        self._reseed(trial.number)
        if is_warm_start(trial) and hasattr(self.inner, "get_trial_generation"):
            self.inner.get_trial_generation(study, trial)  # its fixed genes join generation 0
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        """Forwarded to the inner sampler."""
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Forwarded to the inner sampler."""
        self.inner.reseed_rng()


def make_sampler(config: SamplerConfig, seed: int) -> DistinctSampler:
    """The configured sampler of a study seeded `seed`; the same on create, resume and workers."""
    def factory(stream: int) -> BaseSampler:
        if config.name == "nsga2":
            return NSGAIISampler(population_size=config.population, seed=stream)
        if config.name == "tpe":
            return optuna.samplers.TPESampler(seed=stream, multivariate=True)
        return optuna.samplers.RandomSampler(seed=stream)

    return DistinctSampler(factory, seed)
