"""evoprune.experiments.crossset: two reproductions' verdicts side by side."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from evoprune.errors import EvopruneError
from evoprune.experiments.crossset import compare_summaries, headline, markdown_lines, sub_verdicts
from evoprune.experiments.reproduce import _other_summary

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "studies" / "digits" / "summary.json"


def _summary(name: str, *, extreme: str, f_verdict: str, gain: float, test: int) -> dict:
    """A reproduction summary with (a), (d) and (f) only, as scripts/reproduce.py writes them."""
    return {
        "config": {"name": name, "dataset": name, "model": "resnet20", "proxy_epochs": 1,
                   "proxy_batch_size": 128, "n_trials": 32, "retrain_epochs": 10,
                   "retrain_seeds": 3},
        "sizes": {"train": 10000, "val": 5000, "test": test},
        "base_test_acc": 0.9076, "studies": 27, "trials": 790, "precision": "bf16",
        "seed_sd": {"c_flops = 0.25": {"n": 2, "sd": 0.3}, "c_flops = 0.1": {"n": 2, "sd": 0.9},
                    "c_flops = 0.05": {"n": 2, "sd": 0.5}},
        "observations": [
            {"key": "a", "claim": "STD spaces", "verdict": "not shown",
             "numbers": {"moderate_verdict": "holds", "extreme_verdict": extreme,
                         "extreme": {"alpha": 0.05, "tests": [
                             {"p_better_holm": 0.001}, {"p_better_holm": 0.02},
                             {"p_better_holm": 0.03}]}}},
            {"key": "d", "claim": "law", "verdict": "not shown",
             "numbers": {"ratio": {"estimate": 1.2, "lo": 0.9, "hi": 1.6}}},
            {"key": "f", "claim": "winner beats uniform", "verdict": f_verdict,
             "numbers": {"std": {"verdict": f_verdict, "mean_gain": gain, "lo": gain - 0.4,
                                 "hi": gain + 0.4, "n": 21},
                         "mcb": {"verdict": "not shown"}}},
        ],
    }


def test_a_verdict_or_a_part_that_changes_is_marked_moved():
    """(a) keeps its verdict but its extreme part changes: moved; (d) unchanged: not moved;
    (f) changes verdict: moved; the headline numbers come from the stored numbers."""
    there = _summary("digits", extreme="not shown", f_verdict="not shown", gain=-0.19, test=360)
    here = _summary("fashion", extreme="holds", f_verdict="holds", gain=0.52, test=10000)
    c = compare_summaries(here, there)
    assert (c.there_name, c.here_name) == ("digits", "fashion")
    moved = {r.key: r.moved for r in c.verdicts}
    assert moved == {"a": True, "d": False, "f": True}
    f = next(r for r in c.verdicts if r.key == "f")
    assert (f.there, f.here) == ("not shown", "holds")
    assert "+0.52 pp [+0.12, +0.92] over 21 pairs" in f.here_detail
    assert "-0.19 pp [-0.59, +0.21]" in f.there_detail
    a = next(r for r in c.verdicts if r.key == "a")
    assert "extreme: holds" in a.here_detail and "extreme: not shown" in a.there_detail
    assert "better in 2 of 3 extreme pairs" in a.here_detail  # Holm p < α/2 = 0.025: 0.001, 0.02
    context = {r.quantity: (r.there, r.here) for r in c.context}
    assert context["test images"] == ("360 (0.28 pp an image)", "10,000 (0.01 pp an image)")
    assert context["the proxy's seed SD"][1] == "0.50 pp (median; 0.30–0.90)"
    text = "\n".join(markdown_lines(c))
    assert "Moved: (a), (f)." in text and "| (d) | **not shown**" in text


def test_an_observation_the_other_set_lacks_shows_a_dash_and_counts_as_moved():
    """A key only here: '—' for the other set, moved."""
    here = _summary("fashion", extreme="holds", f_verdict="holds", gain=0.5, test=10000)
    there = copy.deepcopy(here)
    there["observations"] = there["observations"][:1]
    rows = {r.key: r for r in compare_summaries(here, there).verdicts}
    assert rows["a"].moved is False
    assert rows["f"].there == "—" and rows["f"].there_detail == "—" and rows["f"].moved


def test_the_digits_report_beside_itself_moves_nothing():
    """The committed digits summary against itself: no verdict moves; its stored numbers read."""
    digits = json.loads(DIGITS.read_text())
    c = compare_summaries(digits, digits)
    assert [r.key for r in c.verdicts] == list("abcdef")
    assert (c.there_name, c.here_name) == ("digits (compared)", "digits")
    assert {r.quantity: r.here for r in c.context}["retraining"] == "10 epochs × 3 seeds"
    assert not any(r.moved for r in c.verdicts)
    d = next(o for o in digits["observations"] if o["key"] == "d")
    assert headline(d) == "held-out limit observed / predicted 1.79 [1.19, 2.00]"
    a = next(o for o in digits["observations"] if o["key"] == "a")
    assert sub_verdicts(a) == {"moderate": "holds", "extreme": "not shown"}
    assert "No verdict moved." in markdown_lines(c)[0]


def test_compare_with_is_checked_before_any_work(tmp_path):
    """A missing or foreign file is one EvopruneError naming the key; None reads nothing."""
    assert _other_summary(None) is None
    with pytest.raises(EvopruneError, match=r"compare_with: .* does not exist"):
        _other_summary(str(tmp_path / "nope.json"))
    (tmp_path / "x.json").write_text('{"trials": 3}')
    with pytest.raises(EvopruneError, match="has no observations"):
        _other_summary(str(tmp_path / "x.json"))
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(EvopruneError, match=r"not a readable summary\.json"):
        _other_summary(str(tmp_path / "y.json"))
    assert _other_summary(str(DIGITS))["config"]["name"] == "digits"


def test_a_missing_compare_with_file_is_one_line_exit_2_and_writes_nothing(tmp_path):
    """`reproduce --compare-with nope.json`: exit 2, one line naming the key, no storage or out."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "evoprune", "reproduce", "--config",
           str(ROOT / "studies" / "digits.toml"), "--quick",
           "--storage", f"sqlite:///{tmp_path / 'db' / 'q.db'}", "--out", str(tmp_path / "out"),
           "--compare-with", str(tmp_path / "nope.json")]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "compare_with:" in lines[0] and "does not exist" in lines[0]
    assert "Traceback" not in run.stderr and list(tmp_path.iterdir()) == []
