"""Gene names: a new study names each gene after its unit (`g004 layer2.1.conv1`); a study
stored with `g000` names keeps them when resumed, so NSGA-II's search space stays whole."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import optuna
import pytest
import torch

import evoprune
from evoprune.errors import EvopruneError
from evoprune.searching.baselines import compute_baselines, warm_genes
from evoprune.searching.config import SamplerConfig
from evoprune.searching.genes import gene_names
from evoprune.searching.sampler import searched_space
from evoprune.spaces import Decoder, PruningSpace
from evoprune.store import optuna_compat as compat
from evoprune.store.schema import StudyRecord
from evoprune.store.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]
UNITS = ["layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1",
         "layer2.1.conv1", "layer2.2.conv1", "layer3.0.conv1", "layer3.1.conv1",
         "layer3.2.conv1"]  # the resnet20 fixture's units (internal convs)
NEW = [f"g{i:03d} {u}" for i, u in enumerate(UNITS)]
OLD = [f"g{i:03d}" for i in range(len(UNITS))]
COMMITTED = ("studies/digits/digits.db", "studies/fashion-mnist/fashion-mnist.db",
             "studies/fashion-mnist-payoff/payoff.db")


def _search(model: torch.nn.Module, storage: str, n: int) -> optuna.Study:
    """A Python-API search of the wide space at FLOPs 0.5: uniform trial 0, the L2 heuristic's
    warm start 1, then NSGA-II with a population of 2 (no fine-tune: a second a study)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return evoprune.search(model, torch.zeros(1, 1, 8, 8), c_flops=0.5, baselines=("l2",),
                           finetune=lambda m: None, evaluate=lambda m: 0.5, n_trials=n,
                           sampler=SamplerConfig(population=2), storage=storage,
                           study_name="s", seed=1)


def test_gene_names_carry_the_index_then_the_unit(resnet20_cost):
    """One name per gene, in genotype order; a FLOPs range's extra gene is its target's; the
    index naming is the stored studies' g000…; an unknown naming is refused."""
    wide = Decoder(PruningSpace(c_flops=0.25), resnet20_cost)
    assert gene_names(wide) == NEW and NEW[4] == "g004 layer2.1.conv1"
    assert gene_names(wide, "index") == OLD
    ranged = Decoder(PruningSpace(c_flops=0.2, c_flops_max=0.3), resnet20_cost)
    assert gene_names(ranged) == [*NEW, "g009 flops_target"]
    assert gene_names(ranged, "index") == [*OLD, "g009"]
    assert sorted(gene_names(ranged)) == gene_names(ranged)
    with pytest.raises(EvopruneError, match="unknown gene naming 'units'"):
        gene_names(wide, "units")


def test_a_new_study_names_its_genes_after_the_units(tmp_path, resnet20):
    """Every trial with genes (the warm start, the searched ones) holds the unit names, and the
    study records its naming."""
    study = _search(resnet20, f"sqlite:///{tmp_path}/s.db", 4)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert StudyRecord.from_attrs(study.user_attrs).gene_names == "unit"
    assert trials[0].params == {}  # the uniform recipe has no genotype
    assert trials[1].user_attrs["criterion"] == "l2"
    assert [sorted(t.params) for t in trials[1:]] == [NEW] * 3
    assert sorted(searched_space(study)) == NEW


def _legacy_copy(study: optuna.Study, storage: str) -> optuna.Study:
    """The study as an evoprune before unit names stored it: genes g000…, no `gene_names`."""
    old = dict(zip(NEW, OLD, strict=True))
    legacy = optuna.create_study(study_name=study.study_name, storage=open_storage(storage),
                                 directions=study.directions)
    for key, value in study.user_attrs.items():
        if key != "gene_names":
            legacy.set_user_attr(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy.set_metric_names(study.metric_names)
    for t in study.get_trials():
        system = dict(t.system_attrs)
        if "fixed_params" in system:
            system["fixed_params"] = {old[k]: v for k, v in system["fixed_params"].items()}
        legacy.add_trial(optuna.trial.create_trial(
            state=t.state, values=t.values, params={old[k]: v for k, v in t.params.items()},
            distributions={old[k]: d for k, d in t.distributions.items()},
            user_attrs=t.user_attrs, system_attrs=system))
    return legacy


def test_a_study_stored_with_g000_names_resumes_with_them(tmp_path, resnet20):
    """A study stored before unit names, resumed: the new trials suggest g000… too, so
    NSGA-II's intersection space keeps every gene and it breeds from the stored generations."""
    first = _search(resnet20, f"sqlite:///{tmp_path}/new.db", 5)
    url = f"sqlite:///{tmp_path}/old.db"
    _legacy_copy(first, url)
    study = _search(resnet20, url, 8)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8
    assert "gene_names" not in study.user_attrs
    assert StudyRecord.from_attrs(study.user_attrs).gene_names == "index"
    assert [sorted(t.params) for t in trials[1:]] == [OLD] * 7
    assert sorted(searched_space(study)) == OLD
    generations = [compat.nsga2_generation(t) for t in trials]
    assert generations[:5] == [None, 0, 0, 1, 1] and min(generations[5:]) >= 2
    assert compat.nsga2_parent_numbers(study) & {1, 2, 3, 4}  # bred from the stored trials


def test_a_creation_an_older_version_left_unfinished_keeps_g000_names(tmp_path, resnet20,
                                                                      resnet20_units,
                                                                      resnet20_cost):
    """A study whose creation by an older evoprune was cut short (its config written, no
    `gene_names`) is finished with g000 names: its warm start decodes to the L2 allocation."""
    tree = _search(resnet20, f"sqlite:///{tmp_path}/new.db", 3).user_attrs["config"]
    url = f"sqlite:///{tmp_path}/cut.db"
    optuna.create_study(study_name="s", storage=open_storage(url),
                        directions=["minimize"] * 2).set_user_attr("config", tree)
    study = _search(resnet20, url, 3)
    assert study.user_attrs["gene_names"] == "index"
    decoder = Decoder(PruningSpace(c_flops=0.5), resnet20_cost)
    (l2,) = compute_baselines(resnet20, resnet20_units, decoder, ("l2",))
    warm = study.get_trials()[1]
    assert warm.user_attrs["criterion"] == "l2"
    assert warm.params == warm_genes(decoder, l2.kept, "index")
    assert sorted(warm.params) == OLD and warm.user_attrs["channels"] == list(l2.kept)


@pytest.mark.parametrize("path", COMMITTED)
def test_committed_storages_read_as_g000_names(tmp_path, path):
    """Studies stored before unit names hold g000… genes and no naming: they read as the index
    naming. A storage that grew since (the payoff run) holds new studies with unit names
    (`g004 layer2.1.conv1`); every study holds one naming, and its record says which."""
    if not (ROOT / path).is_file():
        pytest.skip(f"{path} is not in this checkout")
    shutil.copy(ROOT / path, tmp_path / "s.db")  # a copy: nothing is written to the original
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    namings = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        record = StudyRecord.from_attrs(study.user_attrs, summary.study_name)
        namings.append(record.gene_names)
        n = len(record.units)
        names = {name for t in study.get_trials(deepcopy=False) for name in t.params}
        if record.gene_names == "index":
            assert names <= {f"g{i:03d}" for i in range(n + 1)}
        else:
            assert record.gene_names == "unit" and names
            labels = [u["name"] if isinstance(u, dict) else u for u in record.units]
            assert all(re.fullmatch(r"g\d{3} \S+", x) for x in names)
            assert {x.split(" ", 1)[1] for x in names} <= {*labels, "flops_target"}
    assert "index" in namings  # the storage's first studies predate unit names
