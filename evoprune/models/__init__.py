"""The model zoo: `build_model(name, num_classes, in_shape)` for every network evoprune prunes."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from torch import nn

from evoprune.errors import EvopruneError
from evoprune.models.cifar_resnet import CifarResNet
from evoprune.models.mobilenetv2 import MobileNetV2
from evoprune.models.small import DigitsNet
from evoprune.models.vgg import VGG

Shape = tuple[int, int, int]


def _cifar_resnet(depth: int) -> Callable[[int, Shape], nn.Module]:
    return lambda num_classes, in_shape: CifarResNet(depth, num_classes, in_shape[0])


def _torchvision(name: str) -> Callable[[int, Shape], nn.Module]:
    def build(num_classes: int, in_shape: Shape) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_shape[0] != 3:  # a grey or multispectral input: swap the stem, keep its geometry
            if name.startswith("resnet"):
                old = model.conv1
                model.conv1 = nn.Conv2d(in_shape[0], old.out_channels, old.kernel_size,
                                        old.stride, old.padding, bias=False)
            else:
                old = model.features[0][0]
                model.features[0][0] = nn.Conv2d(in_shape[0], old.out_channels, old.kernel_size,
                                                 old.stride, old.padding, bias=False)
        return model

    return build


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


def build_model(name: str, num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    """Build zoo model `name` (or a user `package.module:callable`) for `in_shape` = (C, H, W)."""
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise EvopruneError(f"in_shape must be (channels, height, width), got {in_shape}")
    if num_classes < 1:
        raise EvopruneError(f"num_classes must be at least 1, got {num_classes}")
    if name in MODELS:
        return MODELS[name](int(num_classes), shape)  # type: ignore[arg-type]
    if ":" in name:
        return _build_user_model(name, int(num_classes), shape)  # type: ignore[arg-type]
    raise EvopruneError(
        f"unknown model {name!r}: choose one of {', '.join(MODELS)} or give package.module:callable"
    )


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


__all__ = ["MODELS", "build_model", "model_names"]
