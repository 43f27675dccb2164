"""The model zoo: `build_model(name, num_classes, in_shape)` for every network evoprune prunes."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from torch import nn

from evoprune.errors import EvopruneError
from evoprune.network.models.cifar_resnet import CifarResNet
from evoprune.network.models.mobilenetv2 import MobileNetV2
from evoprune.network.models.small import DigitsNet
from evoprune.network.models.timm_zoo import build_timm_model
from evoprune.network.models.vgg import VGG

Shape = tuple[int, int, int]


def _cifar_resnet(depth: int) -> Callable[[int, Shape], nn.Module]:
    return lambda num_classes, in_shape: CifarResNet(depth, num_classes, in_shape[0])


def _torchvision(name: str) -> Callable[[int, Shape], nn.Module]:
    def build(num_classes: int, in_shape: Shape) -> nn.Module:
        import torchvision

        kwargs = dict(_TV_EXTRA_KWARGS.get(name, {}))
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        if in_shape[0] != 3:  # a grey or multispectral input: swap the stem, keep its geometry
            swap_first_conv(model, in_shape[0])
        return model

    return build


def swap_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace `model`'s first nn.Conv2d by one reading `in_channels` channels, same geometry."""
    first = next(((q, m) for q, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise EvopruneError(f"{type(model).__name__} has no nn.Conv2d stem to read "
                            f"{in_channels}-channel inputs")
    qualname, old = first
    parent_name, _, attr = qualname.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    old.dilation, groups=1, bias=old.bias is not None,
                    padding_mode=old.padding_mode)
    setattr(parent, attr, new)
    return model


# torchvision classifiers that need extra arguments without pretrained weights
_TV_EXTRA_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}
_TRANSFORMER_PREFIXES = ("vit_", "swin_", "maxvit_")
_MIN_SIZE = {"inception_v3": 75}  # smallest height/width the architecture runs on


MODELS: dict[str, Callable[[int, Shape], nn.Module]] = {
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet56": _cifar_resnet(56),
    "resnet110": _cifar_resnet(110),
    "vgg16": lambda nc, shape: VGG(num_classes=nc, in_channels=shape[0], image_size=shape[1]),
    "mobilenetv2": lambda nc, shape: MobileNetV2(nc, shape[0]),
    "resnet18": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
    "tv_mobilenetv2": _torchvision("mobilenet_v2"),
    "digitsnet": lambda nc, shape: DigitsNet(nc, shape[0]),
}


def model_names() -> list[str]:
    """Return the zoo's model names."""
    return list(MODELS)


def build_model(name: str, num_classes: int, in_shape: tuple[int, ...], *,
                code: bool = True) -> nn.Module:
    """Build zoo model `name` (or `torchvision:NAME`, `timm:NAME`, `package.module:callable`) for (C, H, W)."""
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise EvopruneError(f"in_shape must be (channels, height, width), got {in_shape}")
    if num_classes < 1:
        raise EvopruneError(f"num_classes must be at least 1, got {num_classes}")
    if name in MODELS:
        return MODELS[name](int(num_classes), shape)  # type: ignore[arg-type]
    if name.startswith("torchvision:"):  # before the generic module:callable branch
        tv_name = name.partition(":")[2]
        return _build_torchvision_model(tv_name, int(num_classes), shape)  # type: ignore[arg-type]
    if name.startswith("timm:"):

        return build_timm_model(name.partition(":")[2], int(num_classes), shape)  # type: ignore[arg-type]
    if ":" in name:
        if not code:  # a name read from a storage or file: data, never imported (see build_stored)
            raise CodeRefused(f"model {name!r} is code (package:callable), which evoprune does "
                              "not import from a stored name: name it again to build it")
        return _build_user_model(name, int(num_classes), shape)  # type: ignore[arg-type]
    raise EvopruneError(
        f"unknown model {name!r}: choose one of {', '.join(MODELS)}, torchvision:NAME, "
        "timm:NAME or package.module:callable"
    )


class CodeRefused(EvopruneError):
    """A `package:callable` model name met where only built-in names are built (a storage)."""


BUILT_IN_PREFIXES = ("torchvision:", "timm:")  # families evoprune builds by name, importing no user code


def is_code(name: str) -> bool:
    """True for a `package:callable` model name (importing it runs the package's code)."""
    return name not in MODELS and ":" in name and not name.startswith(BUILT_IN_PREFIXES)


def check_stored(stored: str, named: str | None = None, where: str = "the study") -> None:
    """Refuse a stored `package:callable` model the user has not named again (one line, how)."""
    if named is not None and named != stored:
        raise EvopruneError(f"{where} holds model {stored!r}, not {named!r}: pass `model` "
                            f"{stored} (or leave `model` out for a built-in model)")
    if named is None and is_code(stored):
        raise EvopruneError(f"{where} stores its model as code ({stored!r}), which evoprune "
                            "imports only when you name it: if you trust it, pass `model` "
                            f"{stored} (in Python: model={stored!r})")


def build_stored(stored: str, num_classes: int, in_shape: tuple[int, ...], *,
                 named: str | None = None, where: str = "the study") -> nn.Module:
    """Build a model whose name was read from a storage or a file: data, not code.

    Built-in names (the zoo, `torchvision:NAME`, `timm:NAME`) are built as they are. A
    `package:callable` is imported only when the user names it again (`named`, from `--model`
    or Python); otherwise one line says how (`check_stored`).
    """
    check_stored(stored, named, where)
    return build_model(stored, num_classes, in_shape, code=named is not None)


def _transformer_error(name: str) -> EvopruneError:
    """The one-line refusal of a vision transformer (or any classifier without conv filters)."""
    return EvopruneError(
        f"{name} is a vision transformer: evoprune prunes convolution filters (filter pruning); "
        "transformers need head/token pruning, which it does not do"
    )


def _build_torchvision_model(name: str, num_classes: int, in_shape: Shape) -> nn.Module:
    """Build torchvision classifier `name` untrained, for `in_shape`; one-line errors otherwise."""
    import difflib

    import torch
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else \
            "see torchvision.models.list_models()"
        raise EvopruneError(f"unknown torchvision model {name!r}: {hint}")
    if name.startswith(_TRANSFORMER_PREFIXES):
        raise _transformer_error(name)
    model = _torchvision(name)(num_classes, in_shape)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    if convs <= 1 or any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise _transformer_error(name)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        need = f" ({name} needs at least {_MIN_SIZE[name]}x{_MIN_SIZE[name]})" \
            if name in _MIN_SIZE else ""
        raise EvopruneError(
            f"torchvision:{name} cannot run on inputs of shape {in_shape}{need}: {first}; "
            "give larger images (the input size comes from `dataset`, e.g. "
            "synthetic:3x224x224 or imagefolder at 224x224)"
        ) from None
    model.train(was_training)
    return model


def _build_user_model(spec: str, num_classes: int, in_shape: Shape) -> nn.Module:
    """Import `package.module:callable` and call it with the arguments it accepts."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise EvopruneError(
            f"cannot load model {spec!r} ({type(exc).__name__}: {exc}); "
            "give an importable package.module:callable"
        ) from None
    offered = {"num_classes": num_classes, "in_shape": in_shape, "in_channels": in_shape[0]}
    try:
        params = inspect.signature(factory).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_kwargs or k in params}
    except (TypeError, ValueError):
        kwargs = {}
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise EvopruneError(f"model {spec!r} failed to build: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise EvopruneError(f"model {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


__all__ = ["MODELS", "build_model", "build_stored", "check_stored", "is_code", "model_names",
           "swap_first_conv"]
