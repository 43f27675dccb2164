"""Sound measurement: selection never reads the test split, paired seeds, informative objectives."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pytest
import torch

from evoprune.errors import EvopruneError
from evoprune.searching import BaseConfig, SamplerConfig, SearchConfig, run_search
from evoprune.searching.config import objectives_for
from evoprune.searching.objective import ProxyConfig, trial_seed
from evoprune.spaces import PruningSpace
from evoprune.store.schema import StudyRecord, trial_record

VOLATILE = {"worker", "proxy_seconds"}  # what legitimately differs between two identical runs


def _config(storage: str, ckpt: str, space: PruningSpace, **kw) -> SearchConfig:
    """A tiny search on digits: 1 proxy epoch, 2 uniform seeds, 5 trials."""
    settings = {"n_trials": 5, "uniform_seeds": 2, "sampler": SamplerConfig("random"),
                "baselines": (), **kw}
    return SearchConfig(space=space, base=BaseConfig(checkpoint=ckpt),
                        proxy=ProxyConfig(epochs=1, batch_size=64), storage=storage,
                        device="cpu", **settings)


def _trials(storage: str, name: str) -> list[tuple]:
    """Each trial's state, values and attrs (volatile ones left out), in number order."""
    from evoprune.store.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    return [(t.number, t.state.name, t.values,
             {k: v for k, v in t.user_attrs.items() if k not in VOLATILE})
            for t in study.get_trials()]


def test_a_search_never_reads_the_test_split(tmp_path, base_ckpt, monkeypatch):
    """Scrambled test labels give the identical study; only the base's test accuracy moves."""
    import evoprune.searching.run as search_run
    import evoprune.searching.worker as search_worker
    import evoprune.training.data as data

    space = PruningSpace(c_flops=0.3, c_std=0.05)
    first = _config(f"sqlite:///{tmp_path}/a.db", base_ckpt, space)
    run_search(first)
    real = data.load_dataset

    def scrambled(*args, **kwargs):
        d = real(*args, **kwargs)
        g = torch.Generator().manual_seed(1)
        return replace(d, test_y=(d.test_y + torch.randint(1, 10, d.test_y.shape, generator=g)) % 10)

    for module in (search_run, search_worker):  # where a search reads its data
        monkeypatch.setattr(module, "load_dataset", scrambled)
    second = _config(f"sqlite:///{tmp_path}/b.db", base_ckpt, space)
    run_search(second)
    a, b = _trials(first.storage, first.name()), _trials(second.storage, second.name())
    assert len(a) == 5 and a == b
    ra, rb = (StudyRecord.from_attrs(optuna.load_study(
        study_name=c.name(), storage=c.storage).user_attrs) for c in (first, second))
    assert ra.base_val_acc == rb.base_val_acc
    assert ra.base_test_acc > 0.5 > rb.base_test_acc  # the base's test read the scrambled labels
    assert ra.split_sizes["val"] == rb.split_sizes["val"] > 0
    assert ra.selection_split == "val"


def test_spaces_of_one_regime_pair_their_trials_by_seed(tmp_path, base_ckpt):
    """Trial j fine-tunes with one seed in every space; the uniform trials measure seed noise."""
    storage = f"sqlite:///{tmp_path}/s.db"
    records = {}
    for space in (PruningSpace(c_flops=0.3, c_std=0.05), PruningSpace(c_flops=0.3, c_mcb=1.0)):
        config = _config(storage, base_ckpt, space, seed=7)
        run_search(config)
        study = optuna.load_study(study_name=config.name(), storage=storage)
        records[space.label] = [trial_record(t) for t in study.get_trials()]
    std, mcb = records["STD-0.05"], records["mCB-1"]
    assert [r.seed for r in std] == [r.seed for r in mcb] == [trial_seed(7, j) for j in range(5)]
    assert len({r.seed for r in std}) == 5
    assert [r.is_uniform for r in std] == [True, True, False, False, False]
    # the uniform recipe, same seeds: the same drops in both studies; two seeds: two drops
    assert std[0].channels == std[1].channels == mcb[0].channels
    assert [r.val_drop for r in std[:2]] == [r.val_drop for r in mcb[:2]]
    assert std[0].val_drop != std[1].val_drop


def test_the_random_sampler_draws_each_recipe_from_the_space(tmp_path, base_ckpt):
    """Under the random sampler a trial's recipe is Decoder.sample(1, seed of its number)."""
    from evoprune.searching.run import prepare

    config = _config(f"sqlite:///{tmp_path}/r.db", base_ckpt, PruningSpace(c_flops=0.3),
                     n_trials=4, uniform_seeds=1, seed=3)
    prepared = prepare(config)
    run_search(config)
    study = optuna.load_study(study_name=config.name(), storage=config.storage)
    for t in study.get_trials()[1:]:
        drawn = prepared.context.decoder.sample(1, seed=trial_seed(3, t.number))
        assert t.user_attrs["channels"] == [int(k) for k in drawn.kept[0]]
        assert t.params == {}  # no genotype: the recipe itself is the draw


def test_objectives_follow_what_the_space_leaves_free():
    """params under an mCB or params band is refused; defaults carry information."""
    mcb = PruningSpace(c_flops=0.25, c_mcb=1.0)
    assert objectives_for(mcb, None) == ("val_drop",)
    assert objectives_for(PruningSpace(c_flops=0.25, c_std=0.1), None) == ("val_drop", "params")
    assert objectives_for(PruningSpace(c_params=0.25, c_std=0.1), None) == ("val_drop", "flops")
    ranged = PruningSpace(c_flops=0.1, c_flops_max=0.5, c_std=0.1)
    assert objectives_for(ranged, None) == ("val_drop", "flops")
    assert objectives_for(ranged, ("val_drop", "flops", "params")) == ("val_drop", "flops",
                                                                        "params")
    with pytest.raises(EvopruneError, match="objective params carries no information: the mCB"):
        objectives_for(mcb, ("val_drop", "params"))
    with pytest.raises(EvopruneError, match="objective flops carries no information"):
        objectives_for(PruningSpace(c_flops=0.25), ("val_drop", "flops"))
    assert SearchConfig(space=mcb).objectives == ("val_drop",)


def test_cli_reads_a_budget_range_and_refuses_a_pinned_objective(tmp_path, capsys):
    """--c-flops 0.1:0.5 is a range; --objectives val_drop,params in an mCB space exits 2."""
    from evoprune.cli.commands import build_parser, main, search_config

    args = build_parser().parse_args(["search", "--c-flops", "0.1:0.5", "--c-std", "0.1"])
    config = search_config(args)
    assert (config.space.c_flops, config.space.c_flops_max) == (0.1, 0.5)
    assert config.objectives == ("val_drop", "flops")
    assert "f0.1-0.5" in config.name()
    code = main(["search", "--c-flops", "0.25", "--c-mcb", "1", "--objectives",
                 "val_drop,params", "--storage", f"sqlite:///{tmp_path}/x.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "carries no information" in err[0]
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["search", "--c-flops", "0.1:0.2:0.3"])
    assert exc.value.code == 2


def test_a_budget_range_search_returns_a_front_over_flops(tmp_path, base_ckpt):
    """NSGA-II in STD-0.05 over FLOPs 0.2-0.5: trials spread over the range, two objectives."""
    config = _config(f"sqlite:///{tmp_path}/f.db", base_ckpt,
                     PruningSpace(c_flops=0.2, c_flops_max=0.5, c_std=0.05),
                     sampler=SamplerConfig("nsga2", population=4), n_trials=7, uniform_seeds=1)
    run_search(config)
    study = optuna.load_study(study_name=config.name(), storage=config.storage)
    assert study.metric_names == ["val_drop", "flops"]
    flops = np.array([t.user_attrs["flops_ratio"] for t in study.get_trials()])
    assert ((flops >= 0.2 - 0.002) & (flops <= 0.5 + 0.002)).all()
    assert flops.max() - flops.min() > 0.05  # the range is searched, not one budget
    assert all(t.values[1] == t.user_attrs["flops_ratio"] for t in study.get_trials())
    assert 1 <= len(study.best_trials) <= 7
