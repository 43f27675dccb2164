"""timm's CNNs (the optional extra): `timm:NAME` specs, the coverage matrix, the named hard cases.

Skipped when timm is not installed (`pip install 'evoprune[timm]'`), except the one-line refusal.
Random weights only: nothing is downloaded. The whole matrix is `slow`; the models the issue
named (per-channel views, weight standardisation, ECA, all-residual nets, a partial residual)
run by default.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from evoprune.errors import EvopruneError
from evoprune.experiments.coverage import TIMM_FAMILIES, check_model, coverage_row, format_coverage
from evoprune.network.models import build_model

SHAPE = (3, 64, 64)
# units are found, but groups left out whole (fixed splits, uneven or split-attention blocks)
# keep c_flops 0.5 out of reach: refused with the reachable range, in one line
UNREACHABLE = {"skresnet18", "resnest14d", "mixnet_s", "ghostnet_100"}


@pytest.fixture
def timm():
    return pytest.importorskip("timm")


def test_timm_specs_say_in_one_line_what_is_wrong(timm):
    model = build_model("timm:resnet18", 7, SHAPE)
    assert model(__import__("torch").zeros(1, *SHAPE)).shape == (1, 7)
    with pytest.raises(EvopruneError, match=r"unknown timm model 'resnet181': did you mean"):
        build_model("timm:resnet181", 10, SHAPE)
    with pytest.raises(EvopruneError, match=r"timm:inception_v3 cannot run on inputs of shape"):
        build_model("timm:inception_v3", 10, SHAPE)


def test_without_timm_the_spec_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(EvopruneError, match=r"needs timm, which is not installed: "
                                            r"pip install 'evoprune\[timm\]'"):
        build_model("timm:resnet18", 10, SHAPE)


@pytest.mark.parametrize("name", ["convnext_atto", "convnextv2_atto", "nf_resnet26",
                                  "ecaresnet26t"])
def test_per_channel_views_keep_the_stage_width_groups(timm, name):
    row = check_model(f"timm:{name}", 64, default_units=True)
    assert row.ok and row.left_out == 0, row.reasons  # no view is taken for a channel shuffle
    assert row.units > row.default_units > 0  # the stage-width (residual) groups are units
    assert row.flops == row.measured_flops and row.params == row.measured_params


@pytest.mark.parametrize("name", ["repvgg_a0", "mobileone_s0"])
def test_all_residual_nets_say_use_residual_and_prune_with_it(timm, name):
    from evoprune.network.units import find_units

    model = build_model(f"timm:{name}", 10, SHAPE)
    with pytest.raises(EvopruneError, match=r"residual path .* use residual=True \(`residual`\)"):
        find_units(model, SHAPE)
    row = check_model(f"timm:{name}", 64)
    assert row.ok and row.units >= 4


def test_a_partial_residual_is_left_out_in_bounded_time_with_the_structure_named(timm):
    row = check_model("timm:rexnet_100", 64)
    assert row.ok and row.unit_seconds < 120
    assert any(why.startswith("too costly to follow: Torch-Pruning revisits a concat")
               for why in row.reasons), row.reasons


def test_prune_reuses_the_units_found_for_the_model(timm, monkeypatch):
    import evoprune
    from evoprune.network import units as units_module

    calls = []
    real = units_module._find_units
    monkeypatch.setattr(units_module, "_find_units", lambda *a: calls.append(a) or real(*a))
    model = build_model("timm:convnext_atto", 10, SHAPE)
    x = __import__("torch").zeros(1, *SHAPE)
    small = [evoprune.prune(model, {}, x) for _ in range(3)]
    assert len(calls) == 1 and all(s is not model for s in small)


@pytest.mark.parametrize("name", ["mixnet_s", "ghostnet_100", "resnest14d"])
def test_split_and_uneven_blocks_are_refused_with_the_reachable_range(timm, name):
    row = coverage_row(f"timm:{name}", 64)
    assert "refused" in row and "c_flops 0.5 is unreachable" in row["refused"]
    assert "\n" not in row["refused"] and "reachable c_flops is [" in row["refused"]
    assert row["units"] > 0 and row["left_out"] > 0  # what it can prune, it prunes


def test_res2net_reaches_the_band_with_its_split_groups_left_out(timm):
    row = check_model("timm:res2net50_14w_8s", 64)
    assert row.ok and row.left_out == 16 and row.units == 33
    assert row.reasons == ("its channels pass a split, chunk or slice whose sizes the forward "
                           "fixes",)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TIMM_FAMILIES))
def test_the_timm_coverage_matrix(timm, family):
    name = TIMM_FAMILIES[family]
    row = coverage_row(f"timm:{name}", 64, default_units=True)  # inception_v3 at 75×75
    if name in UNREACHABLE:
        assert "c_flops 0.5 is unreachable" in row["refused"], row
        return
    assert row["ok"], row
    assert row["flops"] == row["measured_flops"] and row["params"] == row["measured_params"]


def test_the_timm_table_counts_the_families_covered(timm):
    rows = [coverage_row("timm:resnet18", 64, default_units=True),
            coverage_row("timm:repvgg_a0", 64, default_units=True),
            coverage_row("timm:mixnet_s", 64, default_units=True)]
    text = format_coverage(rows)
    assert "| resnet | timm:resnet18 | 64×64 | 12 (0) | 0 | yes | yes |" in text
    assert "| mixnet | timm:mixnet_s | 64×64 | 14 units, 24 left out; refused: c_flops 0.5 is "\
        "unreachable" in text
    assert "timm: 2 of 3 families covered with residual units, 1 with default units" in text
    assert np.isclose(rows[0]["flops"], rows[0]["measured_flops"])
