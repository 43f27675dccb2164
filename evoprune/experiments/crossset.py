"""Two reproductions side by side: which verdicts moved between study sets, with what they rest on.

Pure functions over two `summary.json` dictionaries (as `scripts/reproduce.py` writes them);
the reproduction report renders the result. Nothing here reruns a test: it reads the verdicts
and the numbers each test stored, so the comparison is exactly as strong as the two reports.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, NamedTuple

PARTS = {  # observation → (label, path into its numbers) of the sub-verdicts it reports
    "a": (("moderate", ("moderate_verdict",)), ("extreme", ("extreme_verdict",))),
    "b": (("stratified", ("stratified", "verdict")), ("within space", ("within", "verdict"))),
    "c": (("close", ("close_verdict",)), ("rise", ("rise_verdict",))),
    "f": (("STD winner", ("std", "verdict")), ("mCB winner", ("mcb", "verdict"))),
}


class VerdictRow(NamedTuple):
    """One observation in both sets: its verdicts, sub-verdicts and headline numbers."""

    key: str
    claim: str
    there: str  # the verdict in the other set ("—" where it has no such observation)
    here: str
    moved: bool  # the verdict or any sub-verdict differs
    there_detail: str  # sub-verdicts and the headline effect with its interval
    here_detail: str


class ContextRow(NamedTuple):
    """One condition of the two runs that a moved verdict may rest on."""

    quantity: str
    there: str
    here: str


class SetComparison(NamedTuple):
    """Two reproductions compared: their names, the verdict rows, the conditions."""

    there_name: str
    here_name: str
    verdicts: list[VerdictRow]
    context: list[ContextRow]


def _get(d: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` in nested dictionaries, None where any step is missing."""
    for step in path:
        if not isinstance(d, dict) or step not in d:
            return None
        d = d[step]
    return d


def _num(x: Any) -> float:
    """A finite float, NaN for None or anything that is not a number."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else math.nan


def _interval(d: Any, fmt: str, estimate: str = "estimate") -> str:
    """`estimate [lo, hi]` of a stored interval dictionary, '—' when it is missing."""
    if not isinstance(d, dict) or not math.isfinite(_num(d.get(estimate))):
        return "—"
    return f"{_num(d[estimate]):{fmt}} [{_num(d.get('lo')):{fmt}}, {_num(d.get('hi')):{fmt}}]"


def sub_verdicts(observation: dict[str, Any]) -> dict[str, str]:
    """The parts an observation's verdict is made of (e.g. (a): moderate, extreme)."""
    numbers = observation.get("numbers") or {}
    parts = {}
    for label, path in PARTS.get(observation.get("key", ""), ()):
        value = _get(numbers, path)
        if isinstance(value, str):
            parts[label] = value
    return parts


def headline(observation: dict[str, Any]) -> str:
    """The observation's main effect with its interval, in a few words."""
    key, n = observation.get("key"), observation.get("numbers") or {}
    if key == "a":
        tests = _get(n, ("extreme", "tests")) or []
        alpha = _num(_get(n, ("extreme", "alpha")))
        better = sum(1 for t in tests if _num(t.get("p_better_holm")) < alpha / 2)
        return f"STD-0.01 better in {better} of {len(tests)} extreme pairs" if tests else "—"
    if key == "b":
        s = n.get("stratified") or {}
        if not math.isfinite(_num(s.get("ratio"))):
            return "—"
        return (f"winners' mCB spread {_num(s['ratio']):.2f}× random subsets' "
                f"(p narrower {_num(s.get('p_narrower')):.3f})")
    if key == "c":
        if not math.isfinite(_num(n.get("rise"))):
            return "—"
        return (f"rise past 90% {_num(n['rise']):+.3f} [{_num(n.get('rise_lo')):+.3f}, "
                f"{_num(n.get('rise_hi')):+.3f}]")
    if key == "d":
        ratio = _interval(n.get("ratio"), ".2f")
        return "—" if ratio == "—" else f"held-out limit observed / predicted {ratio}"
    if key == "e":
        shift = _interval(n.get("shift"), "+.1f")
        return "—" if shift == "—" else f"random − NSGA-II {shift} trials"
    if key == "f":
        s = n.get("std") or {}
        if not math.isfinite(_num(s.get("mean_gain"))):
            return "—"
        over = (f"over {s.get('regimes', '?')} regimes ({s.get('n', '?')} retrainings inside)"
                if s.get("unit") else f"over {s.get('n', '?')} pairs (seeds as replicates)")
        return (f"STD winner's gain {_num(s['mean_gain']):+.2f} pp [{_num(s.get('lo')):+.2f}, "
                f"{_num(s.get('hi')):+.2f}] {over}")
    return "—"


def _detail(observation: dict[str, Any] | None) -> str:
    """Sub-verdicts and headline of one observation, '—' when it is absent."""
    if observation is None:
        return "—"
    parts = "; ".join(f"{k}: {v}" for k, v in sub_verdicts(observation).items())
    return "; ".join(x for x in (parts, headline(observation)) if x and x != "—") or "—"


def _seed_sd(summary: dict[str, Any]) -> str:
    """The proxy's seed SD, the median over regimes with the range, in pp."""
    sds = [_num(v.get("sd")) for v in (summary.get("seed_sd") or {}).values()]
    sds = [s for s in sds if math.isfinite(s)]
    if not sds:
        return "—"
    return f"{statistics.median(sds):.2f} pp (median; {min(sds):.2f}–{max(sds):.2f})"


def _test(summary: dict[str, Any]) -> str:
    """The test split's size and what one test image is worth."""
    n = _get(summary, ("sizes", "test"))
    if not isinstance(n, int) or n <= 0:
        return "—"
    return f"{n:,} ({100 / n:.2f} pp an image)"


def _context(summary: dict[str, Any]) -> dict[str, str]:
    """The conditions of one run that bear on its verdicts."""
    c = summary.get("config") or {}
    acc = _num(summary.get("base_test_acc"))
    sizes = summary.get("sizes") or {}
    return {
        "data set, model": f"{c.get('dataset', '—')}, {c.get('model', '—')}",
        "training / validation images": (f"{sizes['train']:,} / {sizes.get('val', 0):,}"
                                         if isinstance(sizes.get("train"), int) else "—"),
        "test images": _test(summary),
        "base test accuracy": f"{100 * acc:.2f}%" if math.isfinite(acc) else "—",
        "proxy": (f"{c['proxy_epochs']}-epoch fine-tune, batch {c.get('proxy_batch_size')}"
                  if "proxy_epochs" in c else "—"),
        "the proxy's seed SD": _seed_sd(summary),
        "recipes per space and regime": str(c.get("n_trials", "—")),
        "retraining": (f"{c['retrain_epochs']} epochs × {_plural(c.get('retrain_seeds'), 'seed')}"
                       if "retrain_epochs" in c else "—"),
        "studies, COMPLETE trials": f"{summary.get('studies', '—')}, {summary.get('trials', '—')}",
        "precision": str(summary.get("precision") or "—"),
        "machine": str(summary.get("machine") or "—"),
    }


def compare_summaries(here: dict[str, Any], there: dict[str, Any]) -> SetComparison:
    """Set `here` beside `there`: each observation's verdicts in both, and their conditions."""
    theirs = {o["key"]: o for o in there.get("observations", [])}
    rows = []
    for o in here.get("observations", []):
        t = theirs.get(o["key"])
        there_v = t["verdict"] if t else "—"
        moved = t is None or t["verdict"] != o["verdict"] or sub_verdicts(t) != sub_verdicts(o)
        rows.append(VerdictRow(o["key"], o["claim"], there_v, o["verdict"], moved,
                               _detail(t), _detail(o)))
    a, b = _context(there), _context(here)
    context = [ContextRow(k, a[k], b[k]) for k in a]
    there_name, here_name = _name(there), _name(here)
    if there_name == here_name:  # two runs of one set (say --quick beside the full run)
        there_name += " (compared)"
    return SetComparison(there_name, here_name, rows, context)


def _plural(n: Any, word: str) -> str:
    """'1 seed', '3 seeds'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _name(summary: dict[str, Any]) -> str:
    """The study set's name as its config recorded it."""
    return str((summary.get("config") or {}).get("name", "?"))


def markdown_lines(comparison: SetComparison) -> list[str]:
    """The comparison as report lines: a verdict table, then the conditions table."""
    c = comparison
    moved = [r.key for r in c.verdicts if r.moved]
    lines = [
        f"Each observation's verdict in {c.there_name} and here, with its parts and its main "
        "effect (the numbers each report stored; nothing is retested). "
        + (f"Moved: {', '.join(f'({k})' for k in moved)}." if moved else "No verdict moved."),
        "",
        f"| | {c.there_name} | {c.here_name} | moved |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| ({r.key}) | **{r.there}**: {r.there_detail} | **{r.here}**: {r.here_detail} | "
              f"{'yes' if r.moved else 'no'} |" for r in c.verdicts]
    lines += ["", f"| condition | {c.there_name} | {c.here_name} |", "| --- | --- | --- |"]
    lines += [f"| {r.quantity} | {r.there} | {r.here} |" for r in c.context]
    return lines
