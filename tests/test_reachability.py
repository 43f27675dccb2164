"""A space is refused exactly when no recipe lies in it (issue 23, item 2).

Tiny random networks have few enough recipes to enumerate them all here, independently of
`spaces.reach`: every kept-channel vector a ratio grid reaches, judged on the exact cost with the
bands written out again. Against that truth: the decoder refuses ⇔ the space is empty; the
search and the bounds alone (enumeration off) never prove a non-empty space empty, find a
witness in every non-empty one and close every empty one; the LP relaxation never refutes a
box holding a recipe.
"""

from __future__ import annotations

import functools
import itertools
import warnings

import numpy as np
import pytest
import torch.nn as nn

from evoprune.errors import EvopruneError
from evoprune.network.cost import CostModel
from evoprune.network.units import find_units, kept_channels
from evoprune.spaces import Decoder, PruningSpace, bands
from evoprune.spaces.bands import bind
from evoprune.spaces.reach import all_levels, explore, forms, lp_relaxation
from evoprune.spaces.repair import greedy
from evoprune.spaces.solvers import continuous

N_NETS = 10
SPACES_PER_NET = 14
KINDS = ("initial", "params", "std", "mcb", "flops+params", "range")


def conv_net(widths: tuple[int, ...], side: int, flat_head: bool, in_ch: int = 1) -> nn.Sequential:
    """3x3 convs with BN/ReLU, then a linear head (on the flattened map, or after pooling)."""
    layers: list[nn.Module] = []
    cin = in_ch
    for c in widths:
        layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
        cin = c
    head = [nn.Flatten(), nn.Linear(cin * side * side, 3)] if flat_head else \
        [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 3)]
    return nn.Sequential(*layers, *head)


@functools.cache
def tiny_cost(seed: int) -> CostModel:
    """A random tiny network's cost model: 2-3 convs of 2-6 channels on a 3-5 pixel map."""
    rng = np.random.default_rng(seed)
    widths = tuple(int(c) for c in rng.integers(2, 7, int(rng.integers(2, 4))))
    side = int(rng.integers(3, 6))
    model = conv_net(widths, side, bool(rng.random() < 0.5))
    return CostModel(model, find_units(model, (1, side, side)))


def random_space(rng: np.random.Generator, kind: str, cost: CostModel) -> PruningSpace:
    """A space of `kind` with narrow bands centred near a random recipe's figures (or off them).

    Tiny networks leave gaps between their costs, so about half of these spaces are empty.
    """
    common = {"delta": float(rng.choice([0.002, 0.01, 0.03])),
              "r_max": float(rng.choice([0.5, 0.8, 0.95])), "round_to": int(rng.choice([1, 1, 2]))}
    recipe = cost.of_recipe(rng.uniform(0.0, common["r_max"], len(cost.channels)))

    def near(value: float, width: float) -> float:
        return float(np.clip(value + rng.uniform(-3.0, 3.0) * width, 0.02, 1.0))

    f, p = near(recipe.flops_ratio, common["delta"]), near(recipe.params_ratio, common["delta"])
    if kind == "initial":
        return PruningSpace(c_flops=f, **common)
    if kind == "params":
        return PruningSpace(c_params=p, **common)
    if kind == "std":
        band = {"c_flops": f} if rng.random() < 0.5 else {"c_params": p}
        return PruningSpace(**band, c_std=float(rng.choice([0.01, 0.05, 0.1])), **common)
    if kind == "mcb":
        tol = float(rng.choice([0.02, 0.1]))
        return PruningSpace(c_flops=f, c_mcb=max(recipe.mcb + rng.uniform(-3.0, 3.0) * tol, 0.3),
                            mcb_tol=tol, **common)
    if kind == "flops+params":
        return PruningSpace(c_flops=f, c_params=p, **common)
    return PruningSpace(c_flops=f, c_flops_max=min(1.0, f + float(rng.uniform(0.0, 0.05)) + 1e-3),
                        **common)


def brute_levels(cost: CostModel, space: PruningSpace) -> list[np.ndarray]:
    """Every unit's kept counts over a fine grid of ratios in [0, r_max] (not `reach`'s formula)."""
    grid = np.append(np.linspace(0.0, space.r_max, 20_001), space.r_max)
    rt = np.broadcast_to(np.asarray(cost.rounding(space.round_to)), cost.channels.shape)
    return [np.unique(kept_channels(np.array([c]), grid[:, None], int(s)))
            for c, s in zip(cost.channels, rt, strict=True)]


def inside(space: PruningSpace, cost: CostModel, kept: np.ndarray) -> np.ndarray:
    """The bands written out again: which kept vectors (M, N) lie in every band."""
    flops, params = cost.batch(kept)
    f, p = flops / cost.base_flops, params / cost.base_params
    ok = np.ones(len(kept), bool)
    if space.c_flops is not None:
        top = space.c_flops_max if space.c_flops_max is not None else space.c_flops
        ok &= (f >= space.c_flops - space.delta) & (f <= top + space.delta)
    if space.c_params is not None:
        ok &= np.abs(p - space.c_params) <= space.delta
    if space.c_mcb is not None:
        ok &= np.abs(f / p - space.c_mcb) <= space.mcb_tol
    return ok


def recipe_count(space: PruningSpace, cost: CostModel) -> int:
    """How many kept-channel vectors lie in every band (all of them enumerated)."""
    combos = np.array(list(itertools.product(*brute_levels(cost, space))), dtype=np.int64)
    return int(inside(space, cost, combos).sum())


def cases() -> list[tuple[int, PruningSpace]]:
    """(network seed, space) pairs: every kind on every tiny network."""
    rng = np.random.default_rng(23)
    return [(net, random_space(rng, KINDS[k % len(KINDS)], tiny_cost(net)))
            for net in range(N_NETS) for k in range(SPACES_PER_NET)]


@functools.cache
def judged() -> list[tuple[int, PruningSpace, int]]:
    """Every case with its true recipe count."""
    return [(net, space, recipe_count(space, tiny_cost(net))) for net, space in cases()]


def test_the_cases_hold_empty_and_non_empty_spaces_of_every_kind():
    for kind in KINDS:
        counts = [n for _, s, n in judged()
                  if ("range" if s.c_flops_max is not None else s.kind) == kind]
        assert sum(n == 0 for n in counts) >= 3, kind  # the test would not see a lie otherwise
        assert sum(n > 0 for n in counts) >= 3, kind


def test_refused_exactly_when_no_recipe_exists_and_accepted_spaces_decode_inside():
    rng = np.random.default_rng(0)
    for net, space, count in judged():
        cost = tiny_cost(net)
        try:
            decoder = Decoder(space, cost)
        except EvopruneError as exc:
            assert count == 0, (space, cost.channels, str(exc))
            assert "reachable" in str(exc) or "widen" in str(exc), str(exc)
            assert "\n" not in str(exc)
            continue
        assert count > 0, (space, cost.channels)
        genotypes = rng.random((8, decoder.n_genes))
        genotypes[0], genotypes[1] = 0.0, 1.0
        for out in (decoder.decode(genotypes), decoder.sample(8, seed=net)):
            assert inside(space, cost, out.kept).all(), space
            assert ((out.recipes >= 0) & (out.recipes <= space.r_max)).all()
            assert np.array_equal(kept_channels(cost.channels, out.recipes,
                                                cost.rounding(space.round_to)), out.kept)


def test_search_and_bounds_alone_never_lie_and_decide_every_tiny_space():
    proven = {"interval": 0, "branch and bound": 0}
    for net, space, count in judged():
        cost = tiny_cost(net)
        b = bind(space, cost)
        reach = explore(b, enum_limit=0)  # no enumeration: the search, the interval bound, B&B
        assert reach.how != "undecided", space
        assert reach.empty == (count == 0), (space, cost.channels, reach.how, count)
        if count:
            kept = kept_channels(cost.channels, reach.anchors, b.rt)
            assert len(kept) and inside(space, cost, kept).all(), space
        else:
            proven[reach.how] += 1
    assert min(proven.values()) >= 3, proven  # both proofs are exercised


def test_repair_from_many_starts_alone_finds_witnesses_and_proves_nothing():
    found = non_empty = 0
    for net, space, count in judged()[::3]:  # a third of the cases, every kind among them
        b = bind(space, tiny_cost(net))
        reach = explore(b, enum_limit=0, max_boxes=0)  # no enumeration, no branch and bound
        if count == 0:
            assert reach.how in ("interval", "undecided") and not len(reach.anchors), space
            continue
        non_empty += 1
        assert not reach.empty, space
        if len(reach.anchors):
            found += 1
            kept = kept_channels(b.cost.channels, reach.anchors, b.rt)
            assert inside(space, b.cost, kept).all(), space
    assert found >= 0.8 * non_empty, (found, non_empty)


def test_undecided_space_is_accepted_with_one_warning(monkeypatch):
    net, space = next((net, s) for net, s, n in judged() if n == 0 and s.c_mcb is not None)
    b = bind(space, tiny_cost(net))
    assert explore(b, enum_limit=0, max_boxes=0).how == "undecided"
    monkeypatch.setattr(bands, "explore", functools.partial(explore, enum_limit=0, max_boxes=0))
    with pytest.warns(UserWarning, match=r"none was proven impossible .*; sampling will try$"):
        decoder = Decoder(space, tiny_cost(net))
    with pytest.raises(EvopruneError, match="could not be repaired into the space"):
        decoder.decode(np.full((1, decoder.n_genes), 0.5))


def test_lp_relaxation_never_refutes_a_box_holding_a_recipe():
    refuted = 0
    for net, space, count in judged():
        cost = tiny_cost(net)
        b = bind(space, cost)
        levels = all_levels(b)
        lo = np.array([v[0] for v in levels], np.float64)
        hi = np.array([v[-1] for v in levels], np.float64)
        k = lp_relaxation(b, forms(b), lo, hi)
        if k is None:
            refuted += 1
            assert count == 0, space
        else:
            assert ((k >= lo - 1e-6) & (k <= hi + 1e-6)).all()
    assert refuted >= 5  # the LP proves emptiness somewhere (bands out of reach)


def test_lp_relaxation_proves_an_mcb_band_out_of_reach_on_a_real_network():
    from evoprune.network.models import build_model

    model = build_model("resnet20", 10, (1, 8, 8))
    cost = CostModel(model, find_units(model, (1, 8, 8)))
    space = PruningSpace(c_flops=0.5, c_mcb=3.0)  # 4.0: the interval bound alone refutes it
    b = bind(space, cost)
    assert b.reach.empty and b.reach.how == "branch and bound"
    with pytest.raises(EvopruneError, match=r"is unreachable: at c_flops 0\.5 the reachable mCB"):
        Decoder(space, cost)


def issue_example() -> CostModel:
    """Issue 23's user net: three 3x3 convs of 32, 64 and 64 channels on 16x16, linear head."""
    model = conv_net((32, 64, 64), 16, flat_head=True, in_ch=3)
    return CostModel(model, find_units(model, (3, 16, 16)))


def test_the_refused_example_is_accepted_and_draws_in_band_recipes():
    cost = issue_example()
    space = PruningSpace(c_flops=0.5, c_std=0.05)
    count = recipe_count(space, cost)
    assert count > 300  # hundreds of recipes lie in the band ...
    b = bind(space, cost)
    neutral = continuous(b, np.full((1, b.n_genes), 0.5), 1.0)
    assert not greedy(b, neutral)[1][0]  # ... yet the neutral genotype's repair misses them all
    for budgets in ({}, {"max_boxes": 0}):  # the branch and bound; repair from many starts
        reach = explore(b, enum_limit=0, **budgets)
        assert len(reach.anchors) and not reach.empty, budgets
        assert inside(space, cost, kept_channels(cost.channels, reach.anchors, b.rt)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided, not undecided
        decoder = Decoder(space, cost)
    out = decoder.sample(500, seed=3)
    assert inside(space, cost, out.kept).all() and out.inside.all()
    assert len(np.unique(out.kept, axis=0)) > 25  # spread over the band, not one anchor
    assert np.median(out.std) > 0.02  # perturbed ratios, as the STD space draws them
    uniform = decoder.uniform()
    assert inside(space, cost, uniform.kept).all()


def test_truly_empty_band_is_refused_with_the_nearest_reachable_ratios():
    cost = issue_example()
    space = PruningSpace(c_flops=0.3, delta=1e-5)
    assert recipe_count(space, cost) == 0
    with pytest.raises(EvopruneError, match=r"no recipe lies in the initial space .*: the nearest "
                       r"reachable FLOPs ratios are 0\.2999\d+ and 0\.3000\d+; .*widen `delta`"):
        Decoder(space, cost)
