"""evoprune: evolutionary search of network pruning spaces (He et al., arXiv 2304.09453).

The Python API (`evoprune.api`): `search`, `baselines`, `prune`, `analyze`, with `PruningSpace` and
`SamplerConfig` to configure them; `load_pruned`/`save_pruned` for pruned models. Everything is
imported on first use, so `import evoprune` stays light (no torch until needed).
"""

from __future__ import annotations

from typing import Any

from evoprune.errors import EvopruneError

__version__ = "0.1.0"

_LAZY = {
    "search": "evoprune.api", "prune": "evoprune.api", "analyze": "evoprune.api",
    "baselines": "evoprune.api",
    "fingerprint": "evoprune.api", "PruningSpace": "evoprune.spaces",
    "SamplerConfig": "evoprune.searching.config", "build_model": "evoprune.network.models",
    "load_pruned": "evoprune.network.pruning", "save_pruned": "evoprune.network.pruning",
}

__all__ = ["EvopruneError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import the public names on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'evoprune' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
