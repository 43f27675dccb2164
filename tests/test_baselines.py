"""Heuristic baselines: Torch-Pruning's global allocations in the band, labelled trials, warm start."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.units import find_units
from evoprune.searching.baselines import (
    allocate,
    band_of,
    channel_scores,
    check_criteria,
    compute_baselines,
    kept_at,
    warm_genes,
)
from evoprune.spaces import Decoder, PruningSpace

SHAPE = (1, 8, 8)


def plain_cnn() -> nn.Module:
    """Three conv-BN-ReLU layers and a classifier, random BN scales (a plain chain)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 1.5)
    return net.eval()


def batches():
    """Two fixed batches of random images and labels."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, *SHAPE, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(2)]


@pytest.mark.parametrize("criterion", ["l2", "lamp", "bn_scale", "taylor"])
def test_global_allocation_is_torch_prunings_own(criterion):
    """One global MetaPruner step at ratio 0.5 keeps, per layer, what our threshold keeps."""
    import torch_pruning as tp

    from evoprune.searching.baselines import _importance, accumulate_gradients

    net = plain_cnn()
    units = find_units(net, SHAPE)
    scores = channel_scores(net, units, criterion, batches)
    total = sum(len(s) for s in scores)
    n_pruned = total - int(total * 0.5)
    threshold = np.sort(np.concatenate(scores))[n_pruned - 1]
    cost = CostModel(net, units)
    ours = kept_at(scores, threshold, np.ones(len(units), dtype=np.int64), cost, 1)

    theirs = plain_cnn()
    if criterion == "taylor":
        accumulate_gradients(theirs, batches())
    pruner = tp.pruner.MetaPruner(theirs, torch.zeros(1, *SHAPE), importance=_importance(criterion),
                                  global_pruning=True, pruning_ratio=0.5,
                                  ignored_layers=[theirs[-1]])
    pruner.step()
    kept = [m.out_channels for m in theirs if isinstance(m, nn.Conv2d)]
    assert list(ours) == kept
    assert sum(kept) == total - n_pruned  # no ties at the threshold on these weights


@pytest.mark.parametrize("c_flops", [0.5, 0.25, 0.1])
def test_every_criterion_lands_in_the_flops_band(resnet20, resnet20_units, resnet20_cost, c_flops):
    """Each allocation's exact FLOPs ratio is inside c_flops ± delta, every ratio <= r_max."""
    decoder = Decoder(PruningSpace(c_flops=c_flops), resnet20_cost)
    found = compute_baselines(resnet20, resnet20_units, decoder, batches=batches)
    assert [b.criterion for b in found] == ["l2", "taylor", "lamp", "bn_scale"]
    for b in found:
        assert abs(b.flops_ratio - c_flops) <= 0.002 + 1e-12, b
        assert max(b.recipe) <= 0.95 and min(b.kept) >= 1 and b.in_space
        flops, _ = resnet20_cost.batch(np.array([b.kept]))
        assert flops[0] / resnet20_cost.base_flops == pytest.approx(b.flops_ratio)
    again = compute_baselines(resnet20, resnet20_units, decoder, batches=batches)
    assert [b.kept for b in again] == [b.kept for b in found]  # deterministic, taylor included
    assert len({b.kept for b in found}) == 4  # four criteria, four allocations


def test_a_threshold_that_jumps_a_thin_band_is_repaired_and_keeps_its_shape(
        resnet20, resnet20_units, resnet20_cost):
    """Where one channel more or less jumps the band, the repair moves a few units a step."""
    space = PruningSpace(c_flops=0.3, delta=0.0004)
    band = Decoder(band_of(space), resnet20_cost)
    repaired = []
    for criterion in ("l2", "lamp", "bn_scale"):
        scores = channel_scores(resnet20, resnet20_units, criterion)
        kept, steps = allocate(scores, band)
        f = resnet20_cost.batch(kept[None])[0][0] / resnet20_cost.base_flops
        assert abs(f - 0.3) <= 0.0004
        if steps:
            repaired.append(steps)
            cuts = np.unique(np.concatenate(scores))
            above = max((kept_at(scores, t, band.bound.kmin, resnet20_cost, 1) for t in cuts),
                        key=lambda k: (resnet20_cost.batch(k[None])[0][0] <= 0.3004
                                       * resnet20_cost.base_flops, -np.abs(k - kept).sum()))
            assert np.abs(kept - above).sum() <= 3 * steps
    assert repaired, "no criterion jumped the thin band: the repair was not exercised"


def test_other_bands_are_reported_not_forced(resnet20, resnet20_units, resnet20_cost):
    """In an mCB space a baseline stays in the FLOPs band and says when it leaves the mCB band."""
    decoder = Decoder(PruningSpace(c_flops=0.25, c_mcb=1.0, mcb_tol=0.05), resnet20_cost)
    found = compute_baselines(resnet20, resnet20_units, decoder, ("l2", "lamp", "bn_scale"))
    for b in found:
        assert abs(b.flops_ratio - 0.25) <= 0.002
        assert b.in_space == (abs(b.mcb - 1.0) <= 0.05)
        assert ("outside the mCB-1 space" in b.note) == (not b.in_space)
    assert not all(b.in_space for b in found)
    assert warm_genes(decoder, found[0].kept) is None  # no genes outside the wide space


def test_warm_genes_decode_back_to_the_allocation(resnet20, resnet20_units, resnet20_cost):
    """In the wide space g = r / r_max decodes to exactly the baseline's kept channels."""
    decoder = Decoder(PruningSpace(c_flops=0.25), resnet20_cost)
    for b in compute_baselines(resnet20, resnet20_units, decoder, ("l2", "lamp", "bn_scale")):
        genes = warm_genes(decoder, b.kept)
        assert genes is not None and len(genes) == len(resnet20_units)
        back = decoder.decode(np.array([list(genes.values())]))
        assert tuple(back.kept[0]) == b.kept


def test_criteria_are_checked():
    """Unknown or repeated criteria are refused in one line; an empty list is allowed."""
    assert check_criteria([]) == ()
    with pytest.raises(EvopruneError, match="unknown baseline criterion hessian"):
        check_criteria(["l2", "hessian"])
    with pytest.raises(EvopruneError, match="listed twice"):
        check_criteria(["l2", "l2"])


def test_taylor_without_batches_is_left_out(resnet20, resnet20_units, resnet20_cost):
    """No training batches: taylor cannot be scored, the others still are."""
    decoder = Decoder(PruningSpace(c_flops=0.5), resnet20_cost)
    found = compute_baselines(resnet20, resnet20_units, decoder)
    assert [b.criterion for b in found] == ["l2", "lamp", "bn_scale"]
    with pytest.raises(EvopruneError, match="taylor criterion needs training batches"):
        channel_scores(resnet20, resnet20_units, "taylor")


def test_search_holds_labelled_baselines_warm_started_in_the_wide_space(tmp_path, base_ckpt):
    """Wide space: trials 1-2 are the l2 and lamp allocations with genes and NSGA-II's
    generation 0; an mCB space holds them gene-less, outside every population; trial 3 is
    sampled."""
    from evoprune.searching import BaseConfig, SamplerConfig, SearchConfig, run_search
    from evoprune.searching.objective import ProxyConfig
    from evoprune.store.storage import open_storage
    from evoprune.training.retraining import select_top_k

    for space in (PruningSpace(c_flops=0.25), PruningSpace(c_flops=0.25, c_mcb=1.0)):
        storage = f"sqlite:///{tmp_path}/{space.label}.db"
        config = SearchConfig(space=space, base=BaseConfig(checkpoint=base_ckpt),
                              proxy=ProxyConfig(epochs=1), sampler=SamplerConfig(population=4),
                              n_trials=4, uniform_seeds=1, baselines=("l2", "lamp"),
                              storage=storage, device="cpu")
        run_search(config)
        study = optuna.load_study(study_name=config.name(), storage=open_storage(storage))
        trials = study.get_trials()
        assert [t.state.name for t in trials] == ["COMPLETE"] * 4
        roles = [(t.user_attrs.get("role"), t.user_attrs.get("criterion")) for t in trials]
        assert roles[:3] == [(None, None), ("baseline", "l2"), ("baseline", "lamp")]
        assert all(r == (None, None) for r in roles[3:])
        for t in trials[1:3]:
            assert t.user_attrs["channels"] == t.user_attrs["baseline_kept"]
            assert abs(t.user_attrs["flops_ratio"] - 0.25) <= 0.002
        generation = [k for k in trials[1].system_attrs if k.endswith("generation")]
        if space.kind == "initial":  # the warm start: genes, and a place in generation 0
            assert all(len(t.params) == 9 for t in trials[1:])
            assert generation and trials[1].system_attrs[generation[0]] == 0
        else:
            assert trials[1].params == trials[2].params == {} and not generation
            assert all(len(t.params) == 9 for t in trials[3:])
        assert [t.number for t in select_top_k(trials, 4)] == [3]  # searched trials only


def test_the_python_api_gives_allocations_that_prune_takes():
    """evoprune.baselines on a user's model: in the band; evoprune.prune(recipe) keeps `kept`."""
    import evoprune

    net, x = plain_cnn(), torch.zeros(1, *SHAPE)
    found = evoprune.baselines(net, x, c_flops=0.4, batches=batches)
    assert [b.criterion for b in found] == ["l2", "taylor", "lamp", "bn_scale"]
    for b in found:
        assert abs(b.flops_ratio - 0.4) <= 0.002
        small = evoprune.prune(net, list(b.recipe), x)
        assert [m.out_channels for m in small if isinstance(m, nn.Conv2d)] == list(b.kept)
    with pytest.raises(EvopruneError, match="unknown baseline criterion"):
        evoprune.baselines(net, x, c_flops=0.4, criteria=["obd"])
