"""Studies of the method itself, each a command: `reproduce` (the paper's figures on a dataset),
`pilot` (proxy fidelity against long fine-tunes), `payoff` (the search against the heuristics),
`precision_check` (bf16 against fp32), `coverage` (which architectures prune), `crossset`
(laws across datasets).

May import: `evoprune.searching`, `evoprune.analysis` and everything below them.
"""

from __future__ import annotations
