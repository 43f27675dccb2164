"""The search, shaped like Optuna's samplers/nsgaii/ (docs/architecture.md, "The search").

- `config`: the configuration tree (`SearchConfig` and its branches) and `validate`;
- `sampler`: the sampler by name, seed derivation, no repeated genotype, no uniform parent;
- `study`: create, resume, compare configurations, summarise;
- `worker`: the trial context built once per process, then trials until n are COMPLETE;
- `run`: `prepare` and `run_search`, what `evoprune search` calls.

May import: `evoprune.spaces`, `evoprune.training`, `evoprune.network`, `evoprune.store`,
`evoprune.core`, `evoprune.errors`.
"""

from __future__ import annotations

from evoprune.searching.config import (
    SAMPLERS,
    BaseConfig,
    SamplerConfig,
    SearchConfig,
    default_proxy_batch,
    validate,
)
from evoprune.searching.run import Prepared, prepare, run_search

__all__ = ["SAMPLERS", "BaseConfig", "Prepared", "SamplerConfig", "SearchConfig",
           "default_proxy_batch", "prepare", "run_search", "validate"]
