from __future__ import annotations

import numpy as np
import pytest
import torch

from evoprune.errors import EvopruneError
from evoprune.network.pruning import (
    PrunedSpec,
    export_onnx,
    load_pruned,
    prune,
    prune_channels,
    save_pruned,
)

DIGITS = (1, 8, 8)


def test_zero_recipe_gives_bit_identical_outputs(resnet20, resnet20_units):
    x = torch.randn(16, *DIGITS, generator=torch.Generator().manual_seed(0))
    for round_to in (1, 8):
        pruned = prune(resnet20, [0.0] * 9, units=resnet20_units, round_to=round_to)
        assert pruned is not resnet20
        with torch.no_grad():
            assert torch.equal(pruned(x), resnet20(x))


def test_the_original_is_never_mutated(resnet20, resnet20_units):
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    pruned = prune(resnet20, [0.5] * 9, units=resnet20_units)
    after = resnet20.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert resnet20.layer1[0].conv1.out_channels == 16
    assert pruned.layer1[0].conv1.out_channels == 8 and pruned.layer1[0].conv2.in_channels == 8
    assert pruned.layer1[0].bn1.num_features == 8


def test_l2_keeps_the_filters_of_largest_norm(resnet20, resnet20_units):
    model = prune_channels(resnet20, resnet20_units, resnet20_units.channels)  # a copy to plant in
    w = model.layer2[1].conv1.weight.data
    norms = torch.arange(1, 33, dtype=torch.float32).flip(0)[torch.randperm(32, generator=torch.Generator().manual_seed(3))]
    w.copy_(w / w.flatten(1).norm(dim=1)[:, None, None, None] * norms[:, None, None, None])
    recipe = [0.0] * 9
    recipe[4] = 0.75  # keep 8 of 32
    pruned = prune(model, recipe, units=resnet20_units)
    expected = sorted(torch.argsort(norms, descending=True)[:8].tolist())
    assert torch.allclose(pruned.layer2[1].conv1.weight, w[expected])
    assert torch.equal(pruned.layer2[1].conv2.weight, model.layer2[1].conv2.weight[:, expected])
    assert torch.equal(pruned.layer2[1].bn1.running_mean, model.layer2[1].bn1.running_mean[expected])


def _kept_rows(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Indices of the original filters a pruned conv kept (its inputs were not pruned)."""
    flat = original.flatten(1)
    return [int((flat == row).all(1).nonzero()[0]) for row in pruned.flatten(1)]


def test_l1_fpgm_random_keep_the_same_widths_and_differ(resnet20, resnet20_units):
    picks = {}
    w = resnet20.layer3[0].conv1.weight
    for importance in ("l2", "l1", "fpgm", "random"):
        pruned = prune(resnet20, [0.5] * 9, units=resnet20_units, importance=importance, seed=1)
        assert [pruned.get_submodule(n).out_channels for n in resnet20_units.names] == \
            [8, 8, 8, 16, 16, 16, 32, 32, 32]
        picks[importance] = _kept_rows(w, pruned.layer3[0].conv1.weight)
    norms = w.flatten(1).norm(dim=1)
    assert picks["l2"] == sorted(torch.argsort(norms, descending=True)[:32].tolist())
    assert picks["l2"] != picks["random"] and picks["fpgm"] != picks["random"]
    again = prune(resnet20, [0.5] * 9, units=resnet20_units, importance="random", seed=1)
    assert _kept_rows(w, again.layer3[0].conv1.weight) == picks["random"]


def test_prune_refuses_unknown_importance(resnet20, resnet20_units):
    with pytest.raises(EvopruneError, match="unknown importance"):
        prune(resnet20, [0.1] * 9, units=resnet20_units, importance="taylor")


def test_saved_model_reloads_with_weights_only(tmp_path, resnet20, resnet20_units):
    recipe = np.linspace(0.1, 0.9, 9)
    pruned = prune(resnet20, recipe, units=resnet20_units)
    kept = [pruned.get_submodule(n).out_channels for n in resnet20_units.names]
    spec = PrunedSpec("resnet20", 10, DIGITS, False, tuple(resnet20_units.names),
                      tuple(resnet20_units.channels.tolist()), tuple(kept), tuple(recipe.tolist()))
    sha = save_pruned(tmp_path / "m.pt", pruned, spec)
    assert len(sha) == 64 and not list(tmp_path.glob(".*tmp"))
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # no pickled code needed
    assert raw["kept"] == kept and raw["model"] == "resnet20"
    # rebuilt from a fresh base model: weights, BN statistics and outputs all come back
    loaded = load_pruned(tmp_path / "m.pt").eval()
    x = torch.randn(4, *DIGITS)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))


def test_load_pruned_refuses_other_files(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(EvopruneError, match="not an evoprune pruned-model file"):
        load_pruned(tmp_path / "x.pt")
    with pytest.raises(EvopruneError, match="no such file"):
        load_pruned(tmp_path / "missing.pt")


def test_onnx_export(tmp_path, resnet20, resnet20_units):
    onnx = pytest.importorskip("onnx")
    pruned = prune(resnet20, [0.5] * 9, units=resnet20_units)
    export_onnx(pruned, DIGITS, tmp_path / "m.onnx")
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim][1:] == [10]
    x = torch.randn(3, *DIGITS)
    (logits,) = ReferenceEvaluator(model).run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert np.allclose(logits, pruned(x).numpy(), atol=1e-4)
