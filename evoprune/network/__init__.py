"""The network and what it costs: `models` (the zoo), `units` (prunable units found on the
Torch-Pruning graph, recipes rounded to channel steps), `cost` (FLOPs, params and mCB of any
recipe without building it; measured latency), `pruning` (filters removed by L2 norm, a
physically smaller network, saved and loaded).

May import: `evoprune.core`, `evoprune.errors`.
"""

from __future__ import annotations
