"""The names of a genotype's genes: the Optuna params a trial suggests and the dashboard shows.

A new study names each gene after its unit, its index first so the names sort in genotype
order and stay unique (`g002 layer2.1.conv1`); a FLOPs range's extra gene, which picks the
FLOPs target, is `gNNN flops_target`. Studies stored before unit names hold `g000`, `g001`, …
(no `gene_names` in their record: `schema.StudyRecord.gene_names` reads "index") and keep
those names when resumed, so NSGA-II's intersection search space stays whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evoprune.errors import EvopruneError
from evoprune.store.schema import GENE_NAMINGS, INDEX_NAMES, UNIT_NAMES

if TYPE_CHECKING:
    from evoprune.spaces import Decoder

FLOPS_TARGET = "flops_target"  # the label of a FLOPs range's extra gene
MAX_NAME = 255  # characters of a param name (Optuna's RDB column holds 512)


def gene_names(decoder: Decoder, naming: str = UNIT_NAMES) -> list[str]:
    """The param name of each of `decoder`'s genes, in genotype order, under `naming`."""
    if naming not in GENE_NAMINGS:
        raise EvopruneError(f"unknown gene naming {naming!r}: choose {', '.join(GENE_NAMINGS)}")
    n = decoder.n_genes
    if naming == INDEX_NAMES:  # studies stored before unit names: exactly what they hold
        return [f"g{i:03d}" for i in range(n)]
    labels = list(decoder.cost.units.names) + [FLOPS_TARGET] * (n - decoder.n)
    width = max(3, len(str(n - 1)))
    return [f"g{i:0{width}d} {label}"[:MAX_NAME] for i, label in enumerate(labels)]
