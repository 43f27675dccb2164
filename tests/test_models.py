from __future__ import annotations

import sys

import pytest
import torch

from evoprune.errors import EvopruneError
from evoprune.network.models import build_model, model_names

# (name, in_shape, expected parameter count at 10 classes)
PARAMS = {
    "resnet20": 272_474, "resnet32": 466_906, "resnet56": 855_770, "resnet110": 1_730_714,
}


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_every_zoo_model_classifies_its_input_shape(name, shape):
    model = build_model(name, 7, shape).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "expected"), PARAMS.items())
def test_cifar_resnets_have_the_published_sizes(name, expected):
    # He et al. 2016 Table 6: 0.27M, 0.46M, 0.85M, 1.7M parameters (projection shortcuts here)
    model = build_model(name, 10, (3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) == expected
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == int(name[6:])  # 6n+1 3x3 convs plus the linear classifier


def test_torchvision_resnet50_keeps_its_architecture():
    model = build_model("resnet50", 1000, (3, 224, 224))
    assert sum(p.numel() for p in model.parameters()) == 25_557_032


def test_grey_input_swaps_the_torchvision_stem():
    model = build_model("resnet18", 10, (1, 32, 32))
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (7, 7)


def test_user_model_from_module_callable(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 3),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, num_classes))\n"
        "def not_a_model():\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("my_nets:tiny", 4, (2, 8, 8))
    assert model(torch.zeros(1, 2, 8, 8)).shape == (1, 4)
    with pytest.raises(EvopruneError, match=r"returned int, not a torch nn\.Module"):
        build_model("my_nets:not_a_model", 4, (2, 8, 8))
    with pytest.raises(EvopruneError, match="cannot load model 'my_nets:missing'"):
        build_model("my_nets:missing", 4, (2, 8, 8))
    sys.modules.pop("my_nets", None)


@pytest.mark.parametrize("spec", ["no_such_package_xyz:net", "resnet21"])
def test_unknown_models_are_refused(spec):
    with pytest.raises(EvopruneError, match="model"):
        build_model(spec, 10, (3, 32, 32))


def test_bad_shape_is_refused():
    with pytest.raises(EvopruneError, match="in_shape"):
        build_model("resnet20", 10, (32, 32))


def test_torchvision_name_builds_any_torchvision_classifier():
    model = build_model("torchvision:resnet18", 10, (1, 32, 32))
    assert model.training  # the build-time probe forward leaves train mode as it found it
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == 11_175_370  # 3-channel: 11_181_642


# torchvision's RGB stems: (path, out_channels, kernel, stride, padding, has bias)
STEMS = {"densenet121": ("features.conv0", 64, (7, 7), (2, 2), (3, 3), False),
         "squeezenet1_1": ("features.0", 64, (3, 3), (2, 2), (0, 0), True)}


@pytest.mark.parametrize(("name", "stem"), STEMS.items())
def test_grey_input_swaps_the_first_conv_of_any_torchvision_model(name, stem):
    model = build_model(f"torchvision:{name}", 10, (1, 32, 32))
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first is model.get_submodule(stem[0])
    assert first.in_channels == 1 and first.groups == 1
    assert (first.out_channels, first.kernel_size, first.stride, first.padding,
            first.bias is not None) == stem[1:]


def test_unknown_torchvision_name_suggests_close_names():
    with pytest.raises(EvopruneError, match=r"unknown torchvision model 'resnet19': did you mean "
                                            r"resnet18") as info:
        build_model("torchvision:resnet19", 10, (3, 32, 32))
    assert "\n" not in str(info.value)


def test_vision_transformers_are_refused_in_one_line():
    with pytest.raises(EvopruneError) as info:
        build_model("torchvision:vit_b_16", 10, (3, 32, 32))
    assert str(info.value) == (
        "vit_b_16 is a vision transformer: evoprune prunes convolution filters (filter pruning); "
        "transformers need head/token pruning, which it does not do")


def test_too_small_input_is_refused_at_build_time():
    with pytest.raises(EvopruneError, match=r"torchvision:inception_v3 cannot run on inputs of "
                                            r"shape \(3, 32, 32\) \(inception_v3 needs at least "
                                            r"75x75\).*`dataset`") as info:
        build_model("torchvision:inception_v3", 10, (3, 32, 32))
    assert "\n" not in str(info.value)
