"""Analysis of study populations: EDFs, space comparisons, optimal mCB, the drop-limit law.

`load` reads studies from any storage, `edf` and `fit` compute (data in, named tuples out, no
plotting), `plots` is the only matplotlib importer, `report` writes report.md and summary.json.

May import: `evoprune.spaces`, `evoprune.store`, `evoprune.core`, `evoprune.errors`.
"""

from __future__ import annotations
