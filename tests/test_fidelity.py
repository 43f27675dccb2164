"""Multi-fidelity policies replayed on measurements whose truth is known (evoprune.searching.fidelity)."""

from __future__ import annotations

import numpy as np
import pytest

from evoprune.errors import EvopruneError
from evoprune.searching.fidelity import (
    Policy,
    cost,
    default_policies,
    random_regret,
    ranking,
    select,
    simulate,
    survivors,
    verdict,
)


def test_survivors_and_cost_count_the_rungs():
    p = Policy((0, 1, 4), 1 / 2)
    assert survivors(17, p) == [17, 9, 5] and p.label == "0→1→4, keep 1/2"
    assert cost(17, p) == {"epochs": pytest.approx((9 * 1 + 5 * 4) / 17)}
    assert cost(17, p, {0: 3.0, 1: 10.0, 4: 40.0})["seconds"] == pytest.approx(
        (17 * 3 + 9 * 10 + 5 * 40) / 17)
    assert survivors(17, Policy((0, 1, 2, 8), 1 / 3)) == [17, 6, 2, 1]
    assert Policy((2,)).label == "t = 2" and cost(5, Policy((2,)))["epochs"] == 2
    with pytest.raises(EvopruneError, match="keep"):
        Policy((0, 1), 0)
    with pytest.raises(EvopruneError, match="at least one rung"):
        Policy(())


def test_a_screen_that_drops_the_best_loses_it_and_a_faithful_last_rung_finds_it():
    """Rung 0 ranks the truth backwards, rung 1 faithfully: 0→1 keeping half loses the best
    half; rung 1 alone selects the best; the ranking puts later rungs first."""
    truth = np.arange(8.0)  # recipe 0 is the best
    drops = {0: -truth[:, None], 1: truth[:, None]}
    idx, seeds = np.arange(8)[None], np.zeros((1, 8), dtype=int)
    assert select(Policy((1,)), drops, idx, seeds)[0] == 0
    assert select(Policy((0, 1), 1 / 2), drops, idx, seeds)[0] == 4  # the best of the kept
    order = ranking(Policy((0, 1), 1 / 2), drops, idx, seeds)[0]
    assert list(order[:4]) == [4, 5, 6, 7] and list(order[4:]) == [3, 2, 1, 0]
    rows = simulate([Policy((1,)), Policy((0, 1), 1 / 2)], drops, truth, n_boot=50,
                    n_seed=8, reference=Policy((1,)))
    assert rows[0]["regret"] == 0 and rows[0]["p_best"] == 1 and rows[0]["top_regret"] == 0
    assert rows[1]["regret"] == 4 and rows[1]["top_regret"] == pytest.approx(4.0)
    assert rows[1]["vs_reference"]["diff"] == 4 and rows[1]["vs_reference"]["lo"] > 0
    assert rows[0]["vs_reference"] == {"reference": "t = 1", "diff": 0.0, "lo": 0.0, "hi": 0.0}
    v = verdict(rows)
    assert v["worse"] == ["0→1, keep 1/2"] and v["better"] == []
    assert v["supports"].startswith("keeping t = 1")


def test_seed_noise_is_drawn_per_recipe_and_regret_lies_between_oracle_and_random():
    """Two seeds per rung: one noisy (SD 3 pp over a 7 pp spread), the mean-zero noise makes
    selection imperfect, so the regret is above 0 and below the random pick's."""
    rng = np.random.default_rng(1)
    truth = np.linspace(0, 7, 17)
    drops = {1: truth[:, None] + rng.normal(0, 3.0, (17, 2)), 4: truth[:, None] + 0.01}
    rows = simulate([Policy((1,)), Policy((4,)), Policy((1, 4), 1 / 3)], drops, truth,
                    n_boot=100, n_seed=16, reference=Policy((1,)))
    rnd = random_regret(truth, n_boot=100)
    assert rnd["regret"] == pytest.approx(3.5)
    assert 0 < rows[0]["regret"] < rnd["regret"] and rows[1]["regret"] == 0
    assert rows[2]["regret"] <= rows[0]["regret"] and rows[2]["epochs"] == pytest.approx(
        (17 + 6 * 4) / 17)
    assert rows[0]["regret_lo"] <= rows[0]["regret"] <= rows[0]["regret_hi"]


def test_default_policies_use_only_the_measured_rungs():
    labels = [p.label for p in default_policies([1, 2, 4])]
    assert labels[:3] == ["t = 1", "t = 2", "t = 4"]
    assert "1→4, keep 1/3" in labels and not any(lb.startswith("0") for lb in labels)
