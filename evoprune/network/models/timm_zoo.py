"""`timm:NAME`: timm's CNNs (an optional extra, `pip install 'evoprune[timm]'`), untrained."""

from __future__ import annotations

import difflib

from torch import nn

from evoprune.errors import EvopruneError

Shape = tuple[int, int, int]
INSTALL = "pip install 'evoprune[timm]'"


def build_timm_model(name: str, num_classes: int, in_shape: Shape) -> nn.Module:
    """Build timm model `name` with random weights for `in_shape`; one-line errors otherwise."""
    import torch

    try:
        import timm
    except ImportError:
        raise EvopruneError(f"timm:{name} needs timm, which is not installed: {INSTALL}") from None
    names = timm.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise EvopruneError(f"unknown timm model {name!r}: {hint}")
    try:  # pretrained=False: nothing is downloaded
        model = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                  in_chans=in_shape[0])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvopruneError(f"timm:{name} failed to build: {type(exc).__name__}: {first}") from None
    if sum(isinstance(m, nn.Conv2d) for m in model.modules()) <= 1:
        raise EvopruneError(f"timm:{name} has no convolution filters to prune (a transformer or "
                            "MLP model): evoprune prunes CNNs")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvopruneError(f"timm:{name} cannot run on inputs of shape {in_shape}: {first}; "
                            "give images of the size it was designed for (e.g. "
                            "synthetic:3x224x224)") from None
    model.train(was_training)
    return model
