"""Configuration trees: built from nested data and flags, each default written once."""

from __future__ import annotations

import pytest

from evoprune.cli import build_parser, main, search_config
from evoprune.config import diff, from_tree, nest
from evoprune.errors import EvopruneError
from evoprune.retrain import RetrainSettings
from evoprune.schema import StudyRecord
from evoprune.searching.config import BaseConfig, SearchConfig
from evoprune.spaces import PruningSpace


def test_from_tree_builds_nested_branches_and_keeps_a_branchs_own_default():
    """A partial `retrain` branch of a search keeps the search's top_k 0, not RetrainSettings'."""
    c = from_tree(SearchConfig, nest({"space.c_flops": 0.25, "retrain.epochs": 1,
                                      "objectives": ["acc_drop"]}))
    assert c.space == PruningSpace(c_flops=0.25)
    assert c.retrain == RetrainSettings(top_k=0, epochs=1)
    assert c.objectives == ("acc_drop",)
    with pytest.raises(EvopruneError, match="unknown BaseConfig key"):
        from_tree(SearchConfig, {"space": {"c_flops": 0.5}, "base": {"modle": "x"}})


def test_the_cli_builds_the_tree_from_its_flags_with_the_fields_defaults():
    """Flags not typed take the dataclass defaults; typed ones land on their branch."""
    args = build_parser().parse_args(["search", "--c-flops", "0.1", "--c-std", "0.05",
                                      "--proxy-epochs", "3", "--population", "8",
                                      "--objectives", "acc_drop,flops", "--residual"])
    c = search_config(args)
    assert c.space == PruningSpace(c_flops=0.1, c_std=0.05)
    assert (c.proxy.epochs, c.proxy.lr, c.proxy.batch_size) == (3, 0.01, 32)
    assert (c.sampler.name, c.sampler.population) == ("nsga2", 8)
    assert c.base == BaseConfig(residual=True) and c.objectives == ("acc_drop", "flops")
    assert search_config(build_parser().parse_args(["search", "--c-flops", "0.5"])) == \
        SearchConfig(space=PruningSpace(c_flops=0.5))


def test_a_bad_base_epochs_names_its_own_flag(tmp_path, capsys):
    """--base-epochs 0 is refused naming --base-epochs (it said --retrain-epochs before)."""
    with pytest.raises(EvopruneError, match="--base-epochs must be at least 1"):
        BaseConfig(epochs=0)
    assert main(["search", "--c-flops", "0.25", "--base-epochs", "0", "--storage",
                 f"sqlite:///{tmp_path}/s.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--base-epochs" in err[0] and "retrain" not in err[0]
    assert not (tmp_path / "s.db").exists()


def test_a_version_1_study_reads_as_the_same_tree():
    """The flat attrs of studies written before the schema give the same identity."""
    c = SearchConfig(space=PruningSpace(c_flops=0.25, c_mcb=1.0),
                     base=BaseConfig(residual=True), objectives=("acc_drop",))
    v1 = {"model": "resnet20", "dataset": "digits", "residual": True,
          "space": c.space.to_dict(), "proxy": c.proxy.to_dict(),
          "sampler": {"name": "nsga2", "population": 16}, "objectives": ["acc_drop"],
          "checkpoint": {"path": "b.pt", "sha256": "ab"}, "base_acc": 0.98, "seed": 0,
          "units": [{"name": "conv1"}], "created": True}
    record = StudyRecord.from_attrs(v1, "old")
    assert record.schema == 1 and diff(record.identity(), c.identity()) == []
    assert (record.model, record.residual, record.round_to) == ("resnet20", True, 1)
    with pytest.raises(EvopruneError, match="storage schema 3"):
        StudyRecord.from_attrs({**v1, "schema": 3}, "future")
