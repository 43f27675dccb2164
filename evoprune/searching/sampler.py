"""The sampler: choice by name, seed derivation, no repeated genotype, the uniform trial unseen.

The study's uniform baseline is trial 0. Its stored genotype (all genes 0.5) decodes to the
uniform recipe only in the initial space: in STD and mCB spaces it is evaluated as the band's
uniform recipe, which lies outside the space. The sampler therefore never sees it: NSGA-II
does not breed from it and TPE does not model it (`optuna_compat.StudyWithout`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler, NSGAIISampler

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial, TrialState

    from evoprune.searching.config import SamplerConfig

REDRAWS = 8  # redraws of a repeated genotype before one gene is mutated instead


def derive_seed(seed: int, n_stored: int, worker: int) -> int:
    """A sampler seed from the user's seed, the trials already stored and the worker index."""
    return int(np.random.SeedSequence([seed, n_stored, worker]).generate_state(1)[0])


def is_uniform(trial: FrozenTrial) -> bool:
    """Whether a trial is the study's uniform baseline."""
    return bool(trial.user_attrs.get("is_uniform"))


def _seen(study: Study) -> Any:
    """The study as the inner sampler sees it: without the uniform baseline."""
    from evoprune.optuna_compat import StudyWithout

    return StudyWithout(study, lambda t: not is_uniform(t))


class DistinctSampler(BaseSampler):
    """Delegate to `inner` (which never sees the uniform baseline); never repeat a genotype.

    NSGA-II copies a parent unchanged when crossover is skipped and no gene mutates (a few % of
    children with 9 genes): such a copy would spend a trial on a network already measured.
    Retries of failed trials are enqueued, not sampled, so they are not affected.
    """

    def __init__(self, inner: BaseSampler, seed: int) -> None:
        self.inner = inner
        self._rng = np.random.default_rng(seed)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        """The inner sampler's relative search space."""
        return self.inner.infer_relative_search_space(_seen(study), trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The inner sample, redrawn (then one gene mutated) while it repeats a stored one."""
        params = self.inner.sample_relative(_seen(study), trial, search_space)
        if not params:
            return params
        seen = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)
                if t.number != trial.number}
        for _ in range(REDRAWS):
            if tuple(sorted(params.items())) not in seen:
                return params
            params = self.inner.sample_relative(_seen(study), trial, search_space)
        params = dict(params)  # still a copy: mutate one gene uniformly
        gene = sorted(params)[int(self._rng.integers(len(params)))]
        params[gene] = float(self._rng.random())
        return params

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """The inner sampler's independent sample."""
        return self.inner.sample_independent(_seen(study), trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Forwarded to the inner sampler."""
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        """Forwarded to the inner sampler."""
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Forwarded to the inner sampler."""
        self.inner.reseed_rng()


def make_sampler(config: SamplerConfig, seed: int) -> DistinctSampler:
    """The configured sampler with `seed`; the same settings on create and on resume."""
    inner: BaseSampler
    if config.name == "nsga2":
        inner = NSGAIISampler(population_size=config.population, seed=seed)
    elif config.name == "tpe":
        inner = optuna.samplers.TPESampler(seed=seed, multivariate=True)
    else:
        inner = optuna.samplers.RandomSampler(seed=seed)
    return DistinctSampler(inner, seed)
