"""Storage is data, not code; a study resumes the same from any folder.

A storage edited to hold a `package:callable` model (`os:abort`, or a module that leaves a mark
when imported) is refused by retrain, a resumed search and `prune --recipe study:…` in one line
with exit 2: nothing imported, nothing run, nothing written. A model the user names again is
imported. Base and retrain checkpoints live beside the storage, recorded relative to its folder,
so a resume from another folder reuses the base; older studies' paths still load.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from helpers import folder_files, storage_sha

from evoprune.cli.commands import main

STUDY = "resnet20-digits-mCB-1-f0.25"
FAST = ["--c-flops", "0.25", "--c-mcb", "1.0", "--uniform-seeds", "1", "--proxy-epochs", "1",
        "--population", "4", "--device", "cpu", "--baselines", "none"]
EVIL = textwrap.dedent('''
    """Leaves a mark when imported: a storage naming it must never import it."""
    import os
    from pathlib import Path

    Path(os.environ["EVIL_MARK"]).write_text("imported")


    def build(num_classes=10, in_channels=1):
        raise SystemExit("called")
''')
USER = textwrap.dedent('''
    """A user's own small CNN, named as usernet:build."""
    from torch import nn


    def build(num_classes=10, in_channels=1):
        return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16),
                             nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(32, num_classes))
''')


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, base_ckpt) -> Path:
    """A storage holding one real 2-trial resnet20 study, every page in its main file."""
    db = tmp_path_factory.mktemp("study") / "s.db"
    assert main(["search", *FAST, "--checkpoint", base_ckpt, "--storage", f"sqlite:///{db}",
                 "--n-trials", "2"]) == 0
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db




def _plant_model(db: Path, model: str) -> None:
    """Edit the stored configuration's model, as anyone holding the file can."""
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")
    config = dict(study.user_attrs["config"])
    config["base"] = {**config["base"], "model": model}
    study.set_user_attr("config", config)
    del study
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _evoprune(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m evoprune ARGV` in a child (an abort there cannot take pytest with it)."""
    return subprocess.run([sys.executable, "-m", "evoprune", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


COMMANDS = {
    "retrain": ["retrain", "--storage", "{db}", "--study-name", STUDY, "--top-k", "1",
                "--epochs", "1", "--seeds", "1", "--device", "cpu"],
    "resume": ["search", *FAST, "--checkpoint", "{ckpt}", "--storage", "{db}", "--n-trials", "3"],
    "prune": ["prune", "--storage", "{db}", "--recipe", f"study:{STUDY}:1", "--out", "{dir}/p.pt"],
}


@pytest.mark.parametrize("model", ["os:abort", "evil:build"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_storage_holding_code_runs_none_of_it(tmp_path, study_db, base_ckpt, figures, command,
                                                model):
    """retrain, a resumed search and prune --recipe study:… on a storage whose model was edited
    to a package:callable: exit 2, one line naming the model and how to trust it, the storage
    unchanged, no file written, the module never imported (its import leaves a mark)."""
    db = tmp_path / "s.db"
    shutil.copy(study_db, db)
    _plant_model(db, model)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "evil.py").write_text(EVIL)
    mark = tmp_path / "imported.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "lib"),
                                                        os.environ.get("PYTHONPATH", "")]),
           "EVIL_MARK": str(mark)}
    before, files = storage_sha(db), folder_files(tmp_path)
    argv = [a.format(db=f"sqlite:///{db}", ckpt=base_ckpt, dir=tmp_path) for a in COMMANDS[command]]
    run = _evoprune(argv, tmp_path, env)
    err = run.stderr.strip().splitlines()
    ok = run.returncode == 2 and len(err) == 1 and model in err[0] and not mark.exists() \
        and storage_sha(db) == before and folder_files(tmp_path) == files
    figures["storage_code_runs"] += 1
    figures["storage_code_refused"] += ok
    assert run.returncode == 2, run.stderr[-2000:]  # not 134 (abort), not a traceback
    assert len(err) == 1 and model in err[0], err
    if command != "resume":  # a resume names its model on the command line: a mismatch
        assert f"--model {model}" in err[0], err
    else:
        assert "another configuration" in err[0], err
    assert not mark.exists()  # never imported
    assert storage_sha(db) == before and folder_files(tmp_path) == files


@pytest.fixture
def usernet(tmp_path, monkeypatch) -> str:
    (tmp_path / "usernet.py").write_text(USER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "usernet:build"


@pytest.mark.slow  # real searches and a retraining (minutes on 2 cores)
def test_a_user_model_named_again_is_imported(tmp_path, usernet, capsys):
    """A search on the user's package:callable stores it; retrain without --model refuses in one
    line, with --model usernet:build it retrains (and saves beside the storage)."""
    storage = f"sqlite:///{tmp_path}/u.db"
    assert main(["train", "--model", usernet, "--epochs", "1", "--device", "cpu",
                 "--out", str(tmp_path / "base.pt")]) == 0
    assert main(["search", *FAST, "--model", usernet, "--checkpoint", str(tmp_path / "base.pt"),
                 "--storage", storage, "--n-trials", "2"]) == 0
    capsys.readouterr()
    (name,) = optuna.get_all_study_names(storage)
    retrain = ["retrain", "--storage", storage, "--study-name", name, "--top-k", "1",
               "--epochs", "1", "--seeds", "1", "--no-baseline", "--device", "cpu", "--json"]
    assert main(retrain) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--model {usernet}" in err[0]
    assert main([*retrain, "--model", "usernet:other"]) == 2
    assert "holds model 'usernet:build', not 'usernet:other'" in capsys.readouterr().err
    assert main([*retrain, "--model", usernet]) == 0
    rows = json.loads(capsys.readouterr().out)
    rows = rows if isinstance(rows, list) else rows["retrained"]
    assert len(rows) == 1 and Path(rows[0]["model_path"]).parent == tmp_path / "checkpoints" \
        / "retrain"


def _search(storage: str, n: int) -> list[str]:
    return ["search", *FAST, "--base-epochs", "1", "--storage", storage, "--n-trials", str(n)]


@pytest.mark.slow  # real searches and a retraining (minutes on 2 cores)
def test_a_resume_from_another_folder_reuses_the_base(tmp_path, monkeypatch, capsys, figures):
    """A search without --checkpoint caches its base in checkpoints/ beside the storage and
    records it relative to the storage's folder; resumed from another folder (the same storage
    by a relative URL), it trains no base and writes nothing in the new folder."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "store").mkdir()
    storage = "sqlite:///../store/s.db"  # the same file from a/ and from b/
    monkeypatch.chdir(tmp_path / "a")
    assert main(_search(storage, 2)) == 0
    assert "training the base" in capsys.readouterr().err
    (ckpt,) = (tmp_path / "store" / "checkpoints").glob("*.pt")
    attrs = optuna.load_study(study_name=STUDY,
                              storage=f"sqlite:///{tmp_path}/store/s.db").user_attrs
    assert attrs["checkpoint"]["path"] == f"checkpoints/{ckpt.name}"
    assert attrs["checkpoint"]["relative_to"] == "storage"
    assert not (tmp_path / "a" / "studies").exists()
    monkeypatch.chdir(tmp_path / "b")
    assert main(_search(storage, 3)) == 0
    err = capsys.readouterr().err
    trained_again = "training the base" in err
    figures["resume_elsewhere_runs"] += 1
    figures["resume_elsewhere_base_reused"] += not trained_again
    assert not trained_again, err
    assert list((tmp_path / "b").iterdir()) == []  # nothing written in the other folder
    assert list((tmp_path / "store" / "checkpoints").glob("*.pt")) == [ckpt]
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path}/store/s.db")
    assert [t.state.name for t in study.get_trials()].count("COMPLETE") == 3


@pytest.mark.parametrize("style", ["absolute", "cwd-relative"])
def test_an_older_study_with_an_absolute_or_cwd_relative_path_still_loads(
        tmp_path, monkeypatch, capsys, style):
    """A study written before paths were relative to the storage (no `relative_to`): its path
    is read as stored, absolute or relative to the folder the search ran in; the resume trains
    no base."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    storage = "sqlite:///studies/s.db"
    assert main(_search(storage, 2)) == 0
    capsys.readouterr()
    (ckpt,) = (tmp_path / "studies" / "checkpoints").glob("*.pt")
    moved = tmp_path / "old" / ckpt.name  # where an older evoprune left it
    moved.parent.mkdir()
    ckpt.rename(moved)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    old = {"path": str(moved) if style == "absolute" else f"old/{ckpt.name}",
           "sha256": study.user_attrs["checkpoint"]["sha256"]}
    study.set_user_attr("checkpoint", old)
    assert main(_search(storage, 3)) == 0
    assert "training the base" not in capsys.readouterr().err
    assert not (tmp_path / "studies" / "checkpoints" / ckpt.name).exists()
    assert optuna.load_study(study_name=STUDY, storage=storage).user_attrs["checkpoint"] == old


def test_a_pruned_model_file_naming_code_is_refused_unless_named(tmp_path):
    """load_pruned builds a file's built-in model, but imports its package:callable only when
    the caller names it again (the file is data too)."""
    import torch

    from evoprune.errors import EvopruneError
    from evoprune.network.pruning import PrunedSpec, load_pruned, save_pruned

    path = tmp_path / "p.pt"
    save_pruned(path, torch.nn.Linear(1, 1), PrunedSpec("os:abort", 10, (1, 8, 8), False,
                                                         (), (), (), ()))
    with pytest.raises(EvopruneError, match=r"pruned-model file .* stores its model as code "
                                            r"\('os:abort'\).*model='os:abort'"):
        load_pruned(path)
    with pytest.raises(EvopruneError, match="holds model 'os:abort', not 'resnet20'"):
        load_pruned(path, model="resnet20")
