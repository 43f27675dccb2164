"""The verdicts' error rates on simulated populations (scripts/calibrate_verdicts.py): under a
planted null at most 5% "holds" and 5% "does not hold", under the paper's effect at least 80%
"holds" (200 draws, slow); a 40-draw version with looser bounds runs by default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from evoprune.analysis import observations as obs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_verdicts.py"


def _calibration():
    spec = importlib.util.spec_from_file_location("calibrate_verdicts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_test_has_a_null_and_an_effect_row():
    """(a) moderate, (a) extreme, (b), (c) close and rise, (d), (f): each under a null and the
    effect; the rates of a row sum to 1."""
    cal = _calibration()
    rows = cal.calibrate(draws=2, boot=50)
    kinds = {(r["case"], cal.expected(r)) for r in rows}
    for case in ("(a) moderate", "(a) extreme", "(b)", "(b) stratified", "(b) within space",
                 "(c)", "(c) close", "(c) rise", "(d)", "(d) beyond budget", "(f)",
                 "(f), one search a regime", "τ within a regime"):
        assert {(case, "null"), (case, "effect")} <= kinds, case
    assert all(sum(r[v] for v in cal.VERDICTS) == pytest.approx(1.0) for r in rows)


def test_verdict_rates_on_40_draws():
    """40 draws a case (fixed seeds): under a null at most 4 of 40 (10%) holds and 4 of 40 does
    not hold; under the effect at least 28 of 40 (70%) holds."""
    cal = _calibration()
    rows = cal.calibrate(draws=40, boot=200)
    assert cal.violations(rows, null_max=0.1, effect_min=0.7) == []


def test_the_regime_unit_calibrates_on_300_draws():
    """(f) with the regime × search replicate as the unit, 300 draws: under no gain "holds" and
    "does not hold" each within the binomial band of 2.5% (α/2 each way; ≤ 0.025 + 3 SE); under
    the planted gain (10 units) "holds" above 80%; with 5 units (one search a regime) above 50%;
    τ inside one regime of 8: the same band, power above 80%."""
    import math

    cal = _calibration()
    rows = cal.calibrate(draws=300, boot=200, only="(f)") + cal.calibrate(draws=300, only="τ")
    band = 0.025 + 3 * math.sqrt(0.025 * 0.975 / 300)
    for r in rows:
        if r["truth"] == "null":
            assert r[obs.HOLDS] <= band and r[obs.FAILS] <= band, r
    power = {r["case"]: r[obs.HOLDS] for r in rows if r["truth"] == "effect"}
    assert power["(f)"] > 0.8 and power["τ within a regime"] > 0.8
    assert power["(f), one search a regime"] > 0.5


def test_violations_reads_the_wanted_rates():
    """A null row with 6% holds and an effect row with 79% holds are both out of bounds."""
    cal = _calibration()
    rows = [{"case": "(f)", "truth": "null", obs.HOLDS: 0.06, obs.NOT_SHOWN: 0.94, obs.FAILS: 0},
            {"case": "(f)", "truth": "effect", obs.HOLDS: 0.79, obs.NOT_SHOWN: 0.21, obs.FAILS: 0},
            {"case": "(c) rise", "truth": "null-close", obs.HOLDS: 1.0, obs.NOT_SHOWN: 0,
             obs.FAILS: 0}]
    bad = cal.violations(rows)
    assert len(bad) == 2 and "null" in bad[0] and "effect" in bad[1]
    one_sided = [{"case": "(d) beyond budget", "truth": "null-budget", obs.HOLDS: 0.0,
                  obs.NOT_SHOWN: 0.7, obs.FAILS: 0.3},
                 {"case": "(f), one search a regime", "truth": "effect", obs.HOLDS: 0.6,
                  obs.NOT_SHOWN: 0.4, obs.FAILS: 0.0}]
    assert cal.violations(one_sided) == []  # the line better is the truth; 5 units: printed


@pytest.mark.slow
def test_verdict_rates_on_200_draws():
    """The wanted rates, 200 draws a case, as scripts/calibrate_verdicts.py prints them."""
    cal = _calibration()
    rows = cal.calibrate(draws=200, boot=400)
    assert cal.violations(rows) == []
