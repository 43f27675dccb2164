"""The study: create it (record, metric names, uniform baseline first), check a resume, summarise.

A study is named after its model, dataset and space; its user_attrs are a `schema.StudyRecord`.
Rerunning the same search continues it: the stored identity must match the configuration and
the checkpoint its sha256, trials of dead workers are failed and retried.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from evoprune.core.config import diff
from evoprune.core.events import Progress, StudyCreated, TrialsReaped
from evoprune.errors import EvopruneError
from evoprune.searching.baselines import warm_genes
from evoprune.searching.sampler import make_sampler
from evoprune.store.schema import (
    INDEX_NAMES,
    StudyRecord,
    created,
    identity_of,
    retrain_results,
    trial_record,
)
from evoprune.store.storage import (
    find_study,
    journal_path,
    load_study,
    open_storage,
    reap_dead_trials,
    retry_orphans,
    storage_kind,
)

if TYPE_CHECKING:
    import optuna

    from evoprune.searching.baselines import Baseline
    from evoprune.searching.config import SamplerConfig
    from evoprune.spaces import Decoder


def check_resume(existing: optuna.Study | None, identity: dict[str, Any],
                 sha256: str | None = None) -> None:
    """Refuse to resume a study stored with another configuration (or other base weights)."""
    if existing is None:
        return
    attrs, name = existing.user_attrs, existing.study_name
    if created(existing):
        stored = StudyRecord.from_attrs(attrs, name).identity()
    elif "config" in attrs:  # a creation cut short (killed): compare what it wrote
        stored = identity_of(attrs["config"])
    else:
        return
    changed = diff(stored, identity)
    if changed:
        raise EvopruneError(f"study {name!r} exists with another configuration ("
                            f"{'; '.join(changed)}): pass the same settings to resume it, or "
                            "another study name")
    old = attrs.get("checkpoint", {}).get("sha256")
    if sha256 is not None and old is not None and old != sha256:
        raise EvopruneError(f"study {name!r} was searched from another checkpoint (base weights "
                            f"sha256 {old[:12]}…, these {sha256[:12]}…): pass the same weights "
                            "or another study name")


def create_study(storage: str, name: str, record: StudyRecord, objectives: Sequence[str],
                 decoder: Decoder, sampler: SamplerConfig, seed: int,
                 say: Progress, uniform_seeds: int = 1,
                 baselines: Sequence[Baseline] = ()) -> optuna.Study:
    """Create (or finish creating) a study: its record, metric names, the uniform trials first.

    The uniform recipe is enqueued `uniform_seeds` times: trials 0, 1, … fine-tune it with
    their own seeds, so the study measures the proxy's seed noise on it. The heuristic
    baselines follow, labelled `role: baseline`: with genes in the wide space (the warm start
    NSGA-II breeds from), without them elsewhere (`searching.baselines.warm_genes`).
    """
    import optuna


    study = optuna.create_study(
        study_name=name, storage=open_storage(storage, heartbeat=True),
        directions=["minimize"] * len(objectives),
        sampler=make_sampler(sampler, seed), load_if_exists=True)
    if created(study):  # another process created it a moment ago
        return study
    if "config" in study.user_attrs and "gene_names" not in study.user_attrs:
        record = replace(record, gene_names=INDEX_NAMES)  # an older evoprune's creation, cut
        # short: its enqueued genes are g000…, so the study keeps those names
    for key, value in record.to_attrs().items():
        if key != "created":
            study.set_user_attr(key, value)
    with warnings.catch_warnings():  # experimental in Optuna; the dashboard reads it
        warnings.simplefilter("ignore")
        study.set_metric_names(list(objectives))
    have = sum(bool(t.user_attrs.get("is_uniform")) for t in study.get_trials(deepcopy=False))
    for _ in range(uniform_seeds - have):  # no genes: no genotype is the band's uniform recipe
        study.enqueue_trial({}, user_attrs={"is_uniform": True})
    queued = {t.user_attrs.get("criterion") for t in study.get_trials(deepcopy=False)
              if t.user_attrs.get("role") == "baseline"}
    for b in baselines:
        if b.criterion not in queued:
            study.enqueue_trial(warm_genes(decoder, b.kept, record.gene_names) or {},
                                user_attrs=b.to_attrs())
    study.set_user_attr("created", True)  # written last: the study is whole
    u = decoder.uniform()
    say(StudyCreated(name, decoder.n, float(u.flops_ratio[0]), float(u.params_ratio[0]),
                     float(u.mcb[0])))
    return study


def resume_study(storage: str, name: str, say: Progress) -> optuna.Study:
    """Load a created study and reap the trials its dead workers left RUNNING."""
    import optuna


    study = optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat=True))
    reaped = reap_dead_trials(study)
    retry_orphans(study)  # a reaper killed between a FAIL and its retry
    if reaped:
        say(TrialsReaped(tuple(reaped)))
    return study


def n_complete(study: optuna.Study) -> int:
    """COMPLETE trials of a study."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def study_best(storage: str, name: str) -> tuple[float | None, int | None]:
    """The study's lowest finite proxy drop among its COMPLETE trials, and that trial's number."""

    study = find_study(storage, name)
    if study is None:
        return None, None
    rows = [(trial_record(t).val_drop, t.number) for t in study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and trial_record(t).finite]
    return min(rows) if rows else (None, None)


def is_complete(storage: str, name: str, identity: dict[str, Any], n_trials: int) -> bool:
    """Whether the study exists with this identity, n COMPLETE trials and none RUNNING."""

    study = find_study(storage, name)
    if study is None or not created(study):
        return False
    if diff(StudyRecord.from_attrs(study.user_attrs, name).identity(), identity):
        return False
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return states.count("COMPLETE") >= n_trials and "RUNNING" not in states


def dashboard_command(storage: str) -> str:
    """The command that opens the storage in optuna-dashboard."""

    target = str(journal_path(storage)) if storage_kind(storage) == "journal" else storage
    return f"optuna-dashboard {target}"


def summarize(storage: str, study_name: str, k: int = 10) -> dict[str, Any]:
    """Counts of a study's trials by state and its best COMPLETE trials (by val_drop, params)."""
    from collections import Counter


    study = load_study(storage, study_name)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    retrained = retrain_results(study)
    rows = [trial_row(t, retrained.get(t.number)) for t in trials if t.state.name == "COMPLETE"]
    rows.sort(key=lambda r: (r["val_drop"], r["params_ratio"]))
    uniform = [r for r in rows if r["is_uniform"]]
    record = StudyRecord.from_attrs(study.user_attrs, study_name)
    return {"study": study_name, "storage": storage, "states": dict(states),
            "base_val_acc": record.base_val_acc, "base_test_acc": record.base_test_acc,
            "split": record.selection_split, "split_sizes": record.split_sizes,
            "best": rows[:k],
            "uniform": uniform[0] if uniform else None, "uniform_seeds": uniform,
            "metric_names": study.metric_names}


def trial_row(trial: Any, retrained: Any = None) -> dict[str, Any]:
    """One COMPLETE trial as a plain record."""
    r = trial_record(trial)
    row = {"number": trial.number, "val_drop": _nan(r.val_drop), "val_acc": r.val_acc,
           "seed": r.seed,
           "flops_ratio": r.flops_ratio, "params_ratio": _nan(r.params_ratio), "mcb": r.mcb,
           "recipe_std": r.recipe_std, "is_uniform": r.is_uniform, "criterion": r.criterion,
           "recipe": r.recipe,
           "values": list(trial.values or [])}
    if retrained:
        row["retrain"] = [x.to_attrs() for x in retrained]
    return row


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)
