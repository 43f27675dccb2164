"""Data and training: `data` (datasets resident on the device, the validation split), `splits`
(torch-free data defaults), `engine` (fit, evaluate, adaptive BN, the retraining techniques'
schedules), `base` (the base network's config and the one builder that trains or loads it),
`retraining` (a study's top-k retrained and stored: `evoprune retrain`).

May import: `evoprune.network`, `evoprune.store`, `evoprune.core`, `evoprune.errors`.
"""

from __future__ import annotations
