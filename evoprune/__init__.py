"""evoprune: evolutionary search of network pruning spaces (He et al., arXiv 2304.09453)."""

from __future__ import annotations

from evoprune.errors import EvopruneError

__version__ = "0.1.0"

__all__ = [
    "EvopruneError",
    "__version__",
    "build_model",
    "load_pruned",
    "save_pruned",
]


def __getattr__(name: str):  # lazy: keep `import evoprune` light (no torch until needed)
    if name == "build_model":
        from evoprune.models import build_model

        return build_model
    if name in ("load_pruned", "save_pruned"):  # the function prune lives in evoprune.prune
        from evoprune.prune import load_pruned, save_pruned

        return load_pruned if name == "load_pruned" else save_pruned
    raise AttributeError(f"module 'evoprune' has no attribute {name!r}")
