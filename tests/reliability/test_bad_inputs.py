"""Every bad input of the earlier issues: exit code 2, a one-line message, the storage unchanged.

Each case runs the command line in-process against a copy of a real study storage; afterwards
the storage's bytes are the same and no other file has appeared.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import folder_files, storage_sha

from evoprune.cli.commands import main

STUDY = "resnet20-digits-mCB-1-f0.25"
SEARCH = ["search", "--c-flops", "0.25", "--c-mcb", "1.0", "--uniform-seeds", "1",
          "--checkpoint", "{ckpt}",
          "--storage", "{db}", "--proxy-epochs", "1", "--population", "4", "--device", "cpu",
          "--n-trials", "2", "--baselines", "none"]
FRESH = ["--storage", "sqlite:///{dir}/new.db", "--device", "cpu"]

CASES = [
    # search: every flag checked before a storage is opened
    (["search", *FRESH, "--c-flops", "1.5"], "c_flops must be in (0, 1]"),
    (["search", *FRESH, "--c-flops", "0.001"], "reachable"),
    (["search", *FRESH, "--c-flops", "0.25", "--c-mcb", "1.0", "--c-std", "0.1"], "not several"),
    (["search", *FRESH, "--c-flops", "0.25", "--sampler", "cmaes"], "invalid choice"),
    (["search", *FRESH, "--c-flops", "0.25", "--objectives", "val_drop,speed"],
     "unknown objective"),
    (["search", *FRESH, "--c-flops", "0.25", "--model", "resnet21"], "resnet21"),
    (["search", *FRESH, "--c-flops", "0.25", "--dataset", "mnist"], "mnist"),
    (["search", "--c-flops", "0.25", "--storage", "foo://nowhere"], "cannot open storage"),
    (["search", *FRESH, "--c-flops", "0.25", "--n-workers", "2"], "SQLite is not safe"),
    (["search", *FRESH, "--c-flops", "0.25", "--population", "1"], "population"),
    (["search", *FRESH, "--c-flops", "0.25", "--proxy-lr", "-1"], "proxy-lr"),
    (["search", *FRESH, "--c-flops", "0.25", "--checkpoint", "/nonexistent.pt"], "does not exist"),
    (["search", *FRESH, "--c-flops", "0.25", "--n-trials", "0"], "n-trials"),
    (["search", *FRESH, "--c-flops", "0.25", "--n-trials", "3"],  # 3 uniform trials by default
     "--n-trials must be at least 4"),
    (["search", *FRESH, "--c-flops", "0.25", "--uniform-seeds", "0"], "--uniform-seeds"),
    (["search", *FRESH, "--c-flops", "0.25", "--val-size", "1.5"], "--val-size"),
    (["search", *FRESH, "--c-flops", "0.25", "--retrain-seeds", "0"], "--retrain-seeds"),
    (["search", *FRESH, "--c-flops", "0.25:0.1"], "c_flops_max must be in"),
    (["search", *FRESH, "--c-flops", "0.25", "--c-mcb", "1.0", "--objectives",
      "val_drop,params"], "objective params carries no information"),
    (["search", "--c-flops", "0.25", "--storage", "sqlite:///{dir}/no/such/folder.db"],
     "does not exist"),
    # search: a resume whose configuration differs from the stored study's
    ([*SEARCH, "--mcb-tol", "0.2"], "exists with another configuration"),
    ([*SEARCH, "--objectives", "val_drop,flops"], "objective flops carries no information"),
    ([*SEARCH, "--objectives", "val_drop,latency"], "exists with another configuration"),
    ([*SEARCH, "--val-size", "0.3"], "exists with another configuration"),
    ([*SEARCH[:-6], "--proxy-epochs", "2", *SEARCH[-4:]], "exists with another configuration"),
    ([*SEARCH, "--sampler", "random"], "exists with another configuration"),
    # retrain
    (["retrain", "--storage", "{db}", "--study-name", "nope"], "no study"),
    (["retrain", "--storage", "sqlite:///{dir}/new.db", "--study-name", STUDY], "no study"),
    (["retrain", "--storage", "{db}", "--study-name", STUDY, "--top-k", "-1"], "top-k"),
    (["retrain", "--storage", "{db}", "--study-name", STUDY, "--lr", "-0.1"], "lr"),
    (["retrain", "--storage", "{db}", "--study-name", STUDY, "--mode", "magic"], "magic"),
    (["retrain", "--storage", "{db}", "--study-name", STUDY, "--seeds", "0"], "--seeds"),
    (["retrain", "--storage", "{db}", "--study-name", STUDY, "--random-k", "-1"], "--random-k"),
    # analyze
    (["analyze", "--storage", "sqlite:///{dir}/new.db", "--all", "--out", "{dir}/an"],
     "no study storage"),
    (["analyze", "--storage", "{empty}", "--all", "--out", "{dir}/an"], "holds no studies"),
    (["analyze", "--storage", "{db}", "--study-name", "nope", "--out", "{dir}/an"], "no study"),
    (["analyze", "--storage", "{db}", "--all", "--out", "{dir}/an", "--n-boot", "1"], "n-boot"),
    (["analyze", "--storage", "{db}", "--all", "--out", "{dir}/an", "--level", "2"], "level"),
    (["analyze", "--storage", "{db}", "--all", "--out", "{dir}/an", "--winner-fraction", "0"],
     "winner-fraction"),
    (["analyze", "--storage", "{db}", "--all", "--out", "{dir}/an", "--predict", "2"], "predict"),
    (["analyze", "--storage", "{db}", "--out", "{dir}/an"], "required"),
    # prune, sample, train, bench
    (["prune", "--storage", "{db}", "--recipe", f"study:{STUDY}:99", "--out", "{dir}/p.pt"],
     "has no trial 99"),
    (["prune", "--storage", "{db}", "--recipe", "study:nope:0", "--out", "{dir}/p.pt"], "nope"),
    (["prune", "--checkpoint", "{ckpt}", "--recipe", "uniform:1.5", "--out", "{dir}/p.pt"],
     "1.5"),
    (["sample", "--c-flops", "1.5"], "c_flops must be in (0, 1]"),
    (["sample", "--c-std", "0.1"], "needs --c-flops or --c-params"),
    (["train", "--epochs", "0", "--out", "{dir}/t.pt"], "epochs"),
    (["train", "--model", "resnet21", "--out", "{dir}/t.pt"], "resnet21"),
    (["bench", "cost", "--models", "alexnet"], "bench takes models from"),
    # reproduce
    (["reproduce", "--config", "{dir}/none.toml"], "does not exist"),
    (["reproduce", "--config", "{dir}/broken.toml"], "not valid TOML"),
    (["reproduce", "--config", "{dir}/unknown.toml"], "unknown keys"),
    (["reproduce", "--config", "{dir}/three.toml"], "at least 4"),
    (["reproduce", "--config", "{dir}/unknown.toml", "--quick"], "no [quick] table"),
]

CONFIGS = {"broken.toml": "regimes = [0.25,\n", "unknown.toml": "name = 'x'\ncolour = 'red'\n",
           "three.toml": "[spaces]\nregimes = [0.25, 0.1, 0.05]\n"}


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, base_ckpt) -> Path:
    """A storage holding one real 2-trial study."""
    db = tmp_path_factory.mktemp("study") / "s.db"
    argv = [a.format(ckpt=base_ckpt, db=f"sqlite:///{db}") for a in SEARCH]
    assert main(argv) == 0
    with sqlite3.connect(db) as con:  # everything into the main file, so a copy holds it all
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db




@pytest.mark.parametrize(("argv", "words"), CASES, ids=[f"{c[0][0]}-{i}" for i, c in
                                                         enumerate(CASES)])
def test_bad_input_exits_2_with_one_line_and_leaves_the_storage_unchanged(
        tmp_path, capsys, study_db, base_ckpt, figures, argv, words):
    """The command refuses the input: exit 2, one line naming the problem, nothing written."""
    db = tmp_path / "s.db"
    shutil.copy(study_db, db)
    for name, text in CONFIGS.items():
        (tmp_path / name).write_text(text)
    empty = tmp_path / "empty.db"
    if "{empty}" in argv:  # a storage Optuna made that holds no study
        import optuna

        optuna.storages.RDBStorage(f"sqlite:///{empty}").engine.dispose()
    before, files = storage_sha(db), folder_files(tmp_path)
    args = [a.format(ckpt=base_ckpt, db=f"sqlite:///{db}", dir=tmp_path,
                     empty=f"sqlite:///{empty}") for a in argv]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code)
    err = capsys.readouterr().err.strip().splitlines()
    ok = code == 2 and len(err) == 1 and words in err[0] and storage_sha(db) == before \
        and folder_files(tmp_path) == files
    figures["bad_inputs"] += 1
    figures["rejected"] += ok
    assert code == 2, err
    assert len(err) == 1 and words in err[0], err
    assert storage_sha(db) == before
    assert folder_files(tmp_path) == files
