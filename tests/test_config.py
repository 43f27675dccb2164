"""Configuration trees: built from nested data and flags, each default written once."""

from __future__ import annotations

import re

import pytest

from evoprune.cli.commands import build_parser, main, search_config
from evoprune.core.config import diff, from_tree, nest
from evoprune.errors import EvopruneError
from evoprune.searching.config import BaseConfig, SearchConfig
from evoprune.spaces import PruningSpace
from evoprune.store.schema import StudyRecord
from evoprune.training.retraining import RetrainSettings


def test_from_tree_builds_nested_branches_and_keeps_a_branchs_own_default():
    """A partial `retrain` branch of a search keeps the search's top_k 0, not RetrainSettings'."""
    c = from_tree(SearchConfig, nest({"space.c_flops": 0.25, "retrain.epochs": 1,
                                      "objectives": ["val_drop"]}))
    assert c.space == PruningSpace(c_flops=0.25)
    assert c.retrain == RetrainSettings(top_k=0, epochs=1)
    assert c.objectives == ("val_drop",)
    with pytest.raises(EvopruneError, match="unknown BaseConfig key"):
        from_tree(SearchConfig, {"space": {"c_flops": 0.5}, "base": {"modle": "x"}})


def test_the_cli_builds_the_tree_from_its_flags_with_the_fields_defaults():
    """Flags not typed take the dataclass defaults; typed ones land on their branch."""
    args = build_parser().parse_args(["search", "--c-flops", "0.1", "--c-std", "0.05",
                                      "--proxy-epochs", "3", "--population", "8",
                                      "--objectives", "val_drop,params", "--residual",
                                      "--uniform-seeds", "2", "--val-size", "300",
                                      "--retrain-seeds", "4"])
    c = search_config(args)
    assert c.space == PruningSpace(c_flops=0.1, c_std=0.05)
    assert (c.proxy.epochs, c.proxy.lr, c.proxy.batch_size) == (3, 0.01, 32)
    assert (c.sampler.name, c.sampler.population) == ("nsga2", 8)
    assert c.base == BaseConfig(residual=True, val_size=300) and c.base.val_size == 300
    assert isinstance(c.base.val_size, int) and c.objectives == ("val_drop", "params")
    assert (c.uniform_seeds, c.retrain.seeds, c.retrain.top_k) == (2, 4, 0)
    default = search_config(build_parser().parse_args(["search", "--c-flops", "0.5"]))
    assert default == SearchConfig(space=PruningSpace(c_flops=0.5))
    assert (default.uniform_seeds, default.base.val_size, default.retrain.seeds) == (3, 0.2, 3)
    assert default.objectives == ("val_drop", "params")  # the FLOPs band fixes flops


@pytest.mark.parametrize(("flags", "objectives"), [
    (["--c-flops", "0.5"], ("val_drop", "params")),
    (["--c-flops", "0.25", "--c-mcb", "1.0"], ("val_drop",)),  # the mCB band fixes params
    (["--c-flops", "0.5", "--c-params", "0.5"], ("val_drop",)),
    (["--c-params", "0.5"], ("val_drop", "flops")),  # FLOPs vary under a params band
    (["--c-flops", "0.1:0.5"], ("val_drop", "flops")),  # a budget range: the accuracy-FLOPs front
])
def test_default_objectives_are_val_drop_and_what_the_bands_leave_free(flags, objectives):
    """Objectives default to val_drop plus the one cost no band fixes (none under two bands)."""
    c = search_config(build_parser().parse_args(["search", *flags]))
    assert c.objectives == objectives


def test_an_objective_a_band_fixes_is_refused_naming_the_band(tmp_path, capsys):
    """--objectives val_drop,params in an mCB space: one line naming the band, nothing written."""
    mcb = PruningSpace(c_flops=0.25, c_mcb=1.0)
    with pytest.raises(EvopruneError, match=re.escape("objective params carries no information: the "
                                                     "mCB band 1±0.1 at c_flops 0.25")):
        SearchConfig(space=mcb, objectives=("val_drop", "params"))
    with pytest.raises(EvopruneError, match=re.escape("objective flops carries no information: the "
                                                     "FLOPs band 0.25±0.002")):
        SearchConfig(space=PruningSpace(c_flops=0.25), objectives=("val_drop", "flops"))
    assert SearchConfig(space=mcb, objectives=("val_drop", "latency")).objectives == \
        ("val_drop", "latency")
    assert main(["search", "--c-flops", "0.25", "--c-mcb", "1.0", "--objectives",
                 "val_drop,params", "--storage", f"sqlite:///{tmp_path}/s.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "carries no information" in err[0]
    assert not (tmp_path / "s.db").exists()


def test_a_budget_range_is_parsed_into_both_ends_and_names_the_study():
    """--c-flops 0.1:0.5 sets c_flops 0.1 and c_flops_max 0.5; a bad range is refused."""
    c = search_config(build_parser().parse_args(["search", "--c-flops", "0.1:0.5"]))
    assert (c.space.c_flops, c.space.c_flops_max) == (0.1, 0.5)
    assert c.name() == "resnet20-digits-initial-f0.1-0.5"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--c-flops", "0.1:0.2:0.3"])
    with pytest.raises(EvopruneError, match="c_flops_max must be in"):
        search_config(build_parser().parse_args(["search", "--c-flops", "0.5:0.4"]))


def test_uniform_seeds_and_n_trials_are_checked_together():
    """The uniform trials count among n_trials, which must exceed them."""
    space = PruningSpace(c_flops=0.5)
    assert SearchConfig(space=space, n_trials=4, uniform_seeds=3).n_trials == 4
    with pytest.raises(EvopruneError, match="`n_trials` must be at least 4, got 3"):
        SearchConfig(space=space, n_trials=3)
    with pytest.raises(EvopruneError, match="`uniform_seeds` must be at least 1, got 0"):
        SearchConfig(space=space, n_trials=3, uniform_seeds=0)
    with pytest.raises(EvopruneError, match="`val_size`"):
        BaseConfig(val_size=1.5)
    assert "uniform_seeds" not in SearchConfig(space=space).stored_tree()  # not an identity


def test_a_bad_base_epochs_names_its_own_flag(tmp_path, capsys):
    """--base-epochs 0 is refused naming --base-epochs (it said --retrain-epochs before)."""
    with pytest.raises(EvopruneError, match="`base_epochs` must be at least 1"):
        BaseConfig(epochs=0)
    assert main(["search", "--c-flops", "0.25", "--base-epochs", "0", "--storage",
                 f"sqlite:///{tmp_path}/s.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--base-epochs" in err[0] and "retrain" not in err[0]
    assert not (tmp_path / "s.db").exists()


def test_a_version_1_study_reads_as_the_same_tree():
    """The flat attrs of studies written before the schema give the same identity, but for the
    validation split they did not have (their trials were scored on test: no resume mixes)."""
    c = SearchConfig(space=PruningSpace(c_flops=0.25, c_mcb=1.0),
                     base=BaseConfig(residual=True), objectives=("val_drop",))
    v1 = {"model": "resnet20", "dataset": "digits", "residual": True,
          "space": c.space.to_dict(), "proxy": c.proxy.to_dict(),
          "sampler": {"name": "nsga2", "population": 16}, "objectives": ["val_drop"],
          "checkpoint": {"path": "b.pt", "sha256": "ab"}, "base_acc": 0.98, "seed": 0,
          "units": [{"name": "conv1"}], "created": True}
    record = StudyRecord.from_attrs(v1, "old")
    assert record.schema == 1 and record.selection_split == "test"
    assert diff(record.identity(), c.identity()) == ["base.val_size: stored None, now 0.2"]
    assert (record.base_val_acc, record.base_test_acc) == (0.98, 0.98)
    assert (record.model, record.residual, record.round_to) == ("resnet20", True, 1)
    with pytest.raises(EvopruneError, match="storage schema 4; this evoprune reads up to 3"):
        StudyRecord.from_attrs({**v1, "schema": 4}, "future")


def test_a_config_file_with_set_overrides_builds_and_runs_the_search(tmp_path, base_ckpt):
    """defaults < --config FILE < flags < --set; `search --config F --set proxy_epochs=2` runs,
    and the study stores the resolved tree."""
    import optuna

    from evoprune.store.storage import open_storage

    storage = f"sqlite:///{tmp_path}/s.db"
    file = tmp_path / "study.toml"
    file.write_text(f'n_trials = 2\nuniform_seeds = 1\nbaselines = []\ndevice = "cpu"\n'
                    f'storage = "{storage}"\nstudy_name = "from-file"\n'
                    f'[base]\ncheckpoint = "{base_ckpt}"\n'
                    '[space]\nc_flops = 0.25\nc_mcb = 1.0\n'
                    '[proxy]\nepochs = 1\nlr = 0.02\n[sampler]\npopulation = 4\n')
    args = build_parser().parse_args(["search", "--config", str(file), "--proxy-lr", "0.03",
                                      "--set", "proxy_epochs=2", "--set", "sampler.population=6",
                                      "--set", "top_k=0"])
    c = search_config(args)
    assert (c.space.c_flops, c.space.c_mcb, c.n_trials, c.baselines) == (0.25, 1.0, 2, ())
    assert (c.proxy.epochs, c.proxy.lr, c.sampler.population) == (2, 0.03, 6)  # --set, flag
    assert main(["search", "--config", str(file), "--set", "proxy_epochs=2"]) == 0
    study = optuna.load_study(study_name="from-file", storage=open_storage(storage))
    assert study.user_attrs["config"]["proxy"]["epochs"] == 2
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * 2


@pytest.mark.parametrize("argv,message", [
    (["--set", "epochs=2"], "--set epochs: ambiguous: say base.epochs or proxy.epochs or "
                            "retrain.epochs"),
    (["--set", "speed=2"], "--set speed: unknown"),
    (["--set", "proxy_epochs"], "--set takes KEY=VALUE"),
    (["--config", "/nonexistent/study.toml"], "config file /nonexistent/study.toml does not exist"),
])
def test_bad_config_files_and_overrides_are_one_line(argv, message, capsys, tmp_path):
    """An ambiguous or unknown --set key, a missing file: exit 2, one line, nothing written."""
    code = main(["search", "--c-flops", "0.25", "--storage", f"sqlite:///{tmp_path}/s.db",
                 *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.db").exists()


PLANS = {  # experiment designs: their values are the experiment's, stated in their studies/*.toml
    "PilotConfig", "PrecisionCheck", "ReproduceConfig", "PayoffConfig", "AnalyzeConfig"}
NAMED_AGAIN = {("RetrainConfig", "model")}  # a study's model named again: None unless typed


def _job_configs() -> list[type]:
    """Every frozen dataclass of the package that describes a base network (a model field)."""
    import dataclasses
    import importlib
    import pkgutil

    import evoprune

    found = {}
    for info in pkgutil.walk_packages(evoprune.__path__, "evoprune."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj)
                    and obj.__module__ == info.name and "model" in obj.__dataclass_fields__):
                found[obj.__name__] = obj
    return [found[k] for k in sorted(found)]


def test_every_base_default_is_written_once():
    """A job's config that names the base's fields takes BaseConfig's defaults (one place)."""
    import dataclasses

    from evoprune.core.machine import DEFAULT_PRECISION
    from evoprune.store.storage import DEFAULT_STORAGE

    canonical = {f.name: f.default for f in dataclasses.fields(BaseConfig)}
    canonical.update(device="auto", precision=DEFAULT_PRECISION, storage=DEFAULT_STORAGE, seed=0)
    jobs = [c for c in _job_configs() if c.__name__ not in PLANS]
    assert {"TrainJob", "PruneJob", "BaseConfig"} <= {c.__name__ for c in jobs}
    for cls in jobs:
        for f in dataclasses.fields(cls):
            if f.name in canonical and (cls.__name__, f.name) not in NAMED_AGAIN \
                    and f.default is not dataclasses.MISSING:
                assert f.default == canonical[f.name], f"{cls.__name__}.{f.name}"


def test_a_legacy_objective_name_is_read_as_val_drop():
    """Studies stored with the objective `acc_drop` resume under `val_drop` (one name)."""
    from evoprune.searching.objective import check_objectives
    from evoprune.store.schema import identity_of

    assert check_objectives(("acc_drop", "params")) == ("val_drop", "params")
    old = identity_of({"objectives": ["acc_drop"], "base": {}})
    assert old == identity_of({"objectives": ["val_drop"], "base": {}})
    assert old != identity_of({"objectives": ["val_drop", "params"], "base": {}})
