from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from evoprune.cli.commands import main
from evoprune.network.models import build_model


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prune_json_reports_exact_figures(capsys):
    code, out, err = run(capsys, "prune", "--model", "resnet20", "--recipe", "uniform:0.5", "--json")
    assert code == 0 and err == ""
    r = json.loads(out)
    assert r["units"][0] == "layer1.0.conv1" and len(r["units"]) == 9
    assert r["channels"] == [8, 8, 8, 16, 16, 16, 32, 32, 32]
    assert (r["flops"], r["macs"], r["params"]) == (2_559_232, 1_279_616, 138_218)
    assert r["base_flops"] == 5_065_984 and r["base_params"] == 272_186
    assert r["flops_ratio"] == pytest.approx(2_559_232 / 5_065_984)
    assert r["mcb"] == pytest.approx((2_559_232 / 138_218) / (5_065_984 / 272_186))


def test_prune_table_is_readable(capsys):
    code, out, _ = run(capsys, "prune", "--recipe", "uniform:0.25", "--round-to", "4")
    assert code == 0
    assert "layer3.2.conv1  internal        64      48   0.250" in out
    assert "mCB (Eq. 2)" in out and "MACs" in out


def test_cifar_shape_needs_no_cifar_files(capsys):
    code, out, _ = run(capsys, "prune", "--dataset", "cifar10", "--recipe", "uniform:0.5", "--json")
    assert code == 0 and json.loads(out)["in_shape"] == [3, 32, 32]


def test_prune_saves_a_loadable_model(tmp_path, capsys):
    out_file = tmp_path / "pruned.pt"
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"layer2.0.conv1": 0.5, "layer3.1.conv1": 0.75}))
    code, out, _ = run(capsys, "prune", "--recipe", str(recipe), "--out", str(out_file), "--json")
    assert code == 0
    r = json.loads(out)
    assert r["channels"] == [16, 16, 16, 16, 32, 32, 64, 16, 64] and r["out"] == str(out_file)
    from evoprune import load_pruned
    from evoprune.core.checkpoint import sha256_of

    assert sha256_of(out_file) == r["sha256"]
    model = load_pruned(out_file)
    assert model.layer3[1].conv1.out_channels == 16


def test_prune_loads_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(5)
    base = build_model("resnet20", 10, (1, 8, 8))
    torch.save({"state_dict": base.state_dict()}, tmp_path / "base.pt")
    code, _out, _ = run(capsys, "prune", "--checkpoint", str(tmp_path / "base.pt"),
                       "--recipe", "uniform:0.0", "--out", str(tmp_path / "p.pt"), "--json")
    assert code == 0
    from evoprune import load_pruned

    loaded = load_pruned(tmp_path / "p.pt")
    assert torch.equal(loaded.conv1.weight, base.conv1.weight)


def test_study_recipe_from_an_optuna_storage(tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="demo", storage=storage)
    trial = study.ask()
    trial.set_user_attr("recipe", [0.5] * 8 + [0.0])
    study.tell(trial, 1.0)
    code, out, _ = run(capsys, "prune", "--recipe", "study:demo:0", "--storage", storage, "--json")
    assert code == 0 and json.loads(out)["channels"][-2:] == [32, 64]
    code, _, err = run(capsys, "prune", "--recipe", "study:demo:7", "--storage", storage)
    assert code == 2 and "has no trial 7" in err


def _write(path, text):
    path.write_text(text)
    return str(path)


def _bad_cases(tmp_path):
    """Each bad input a user can type, with the words the error must contain."""
    good = build_model("resnet20", 10, (1, 8, 8))
    torch.save(good.state_dict(), tmp_path / "ok.pt")
    torch.save(build_model("resnet32", 10, (1, 8, 8)).state_dict(), tmp_path / "keys.pt")
    torch.save(build_model("resnet20", 10, (3, 32, 32)).state_dict(), tmp_path / "shapes.pt")
    (tmp_path / "nets.py").write_text("def broken(**kw):\n    raise RuntimeError('boom')\n")
    return [
        (["--recipe", _write(tmp_path / "short.json", "[0.1, 0.2]")], "has 2 ratios but the model has 9"),
        (["--recipe", _write(tmp_path / "one.json", "[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,1.0]")], "outside [0, 1)"),
        (["--recipe", _write(tmp_path / "nan.json", "[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,NaN]")], "nan"),
        (["--recipe", "uniform:-0.2"], "0 <= R < 1"),
        (["--recipe", "uniform:nan"], "0 <= R < 1"),
        (["--recipe", _write(tmp_path / "bad.json", "{oops")], "cannot read recipe file"),
        (["--recipe", "nothing-here"], "neither uniform:R"),
        (["--recipe", "uniform:0.1", "--model", "resnet21"], "unknown model 'resnet21'"),
        (["--recipe", "uniform:0.1", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--recipe", "uniform:0.1", "--dataset", "imagefolder", "--data-root",
          str(tmp_path / "nowhere")], "does not exist: check --data-root"),
        (["--recipe", "uniform:0.1", "--checkpoint", str(tmp_path / "keys.pt")], "unexpected"),
        (["--recipe", "uniform:0.1", "--checkpoint", str(tmp_path / "shapes.pt")], "mis-shaped"),
        (["--recipe", "uniform:0.1", "--checkpoint", str(tmp_path / "none.pt")], "no such file"),
        (["--recipe", "uniform:0.1", "--model", "no_such_mod_xyz:net"], "cannot load model"),
        (["--recipe", "uniform:0.1", "--model", "nets:broken"], "failed to build"),
        (["--recipe", "uniform:0.1", "--round-to", "0"], "--round-to"),
        (["--recipe", "study:demo:0", "--storage", f"sqlite:///{tmp_path / 'no.db'}"], "no study storage"),
        (["--recipe", "uniform:0.1", "--importance", "taylor"], "invalid choice"),
        (["--recipe", "uniform:0.1", "--out", str(tmp_path / "no" / "dir" / "x.pt")], "does not exist"),
    ]


def test_every_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = _bad_cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, words in cases:
        out_file = tmp_path / "out.pt"
        try:
            code = main(["prune", *argv, "--out", str(out_file)] if "--out" not in argv
                        else ["prune", *argv])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2, (argv, captured.err)
        assert len(lines) == 1 and words in lines[0], (argv, captured.err)
        assert "Traceback" not in captured.err and captured.out == ""
        assert not out_file.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no db created


def test_console_entry_point_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "evoprune", "prune", "--recipe", "uniform:1.5"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("evoprune prune: error: bad recipe 'uniform:1.5': the uniform "
                                   "ratio must satisfy 0 <= R < 1")


def test_bench_cost_reports_exact_and_faster(capsys):
    code, out, _ = run(capsys, "bench", "cost", "--models", "resnet20", "--repeats", "1", "--json")
    r = json.loads(out)
    assert code == 0 and r["exact"] is True and r["speedup"] > 10 and r["units"] == 9
    code, _, err = run(capsys, "bench", "cost", "--models", "alexnet")
    assert code == 2 and "bench takes models from" in err


def test_sample_json_lines_are_recipes_prune_accepts(tmp_path, capsys):
    code, out, err = run(capsys, "sample", "--model", "resnet56", "--dataset", "cifar10",
                         "--c-flops", "0.25", "--c-mcb", "1.0", "--n", "6", "--seed", "3", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 6 and all(r["inside"] for r in rows)
    assert all(abs(r["flops_ratio"] - 0.25) <= 0.002 and abs(r["mcb"] - 1.0) <= 0.1 for r in rows)
    assert {"recipe", "channels", "flops_ratio", "params_ratio", "mcb", "std"} <= set(rows[0])
    summary = json.loads(err)
    assert summary["summary"]["hit_rate"] == 1.0 and summary["space"]["kind"] == "mcb"
    # a recipe file written from a line re-prunes to exactly the same channels and cost
    (tmp_path / "r.json").write_text(json.dumps({"recipe": rows[2]["recipe"]}))
    code, out, _ = run(capsys, "prune", "--model", "resnet56", "--dataset", "cifar10",
                       "--recipe", str(tmp_path / "r.json"), "--json")
    pruned = json.loads(out)
    assert code == 0 and pruned["channels"] == rows[2]["channels"]
    assert pruned["flops_ratio"] == rows[2]["flops_ratio"] and pruned["mcb"] == rows[2]["mcb"]
    # the same seed draws the same recipes
    code, again, _ = run(capsys, "sample", "--model", "resnet56", "--dataset", "cifar10",
                         "--c-flops", "0.25", "--c-mcb", "1.0", "--n", "6", "--seed", "3", "--json")
    assert again.splitlines()[0] == json.dumps(rows[0])


def test_sample_table_and_summary(capsys):
    code, out, _ = run(capsys, "sample", "--c-flops", "0.5", "--c-std", "0.05", "--n", "4")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("STD-0.05 space of resnet20 (9 units) (FLOPs 0.5±0.002, "
                               "perturbation σ 0.05")
    assert len(lines) == 2 + 4 + 1 and lines[-1].startswith("4/4 inside every band (100.0%)")


@pytest.mark.parametrize(("argv", "words"), [
    (["--c-flops", "0.02", "--model", "resnet56"], "search the residual-coupled groups too (--residual)"),
    (["--c-flops", "0.5", "--c-mcb", "9"], "reachable mCB is about"),
    (["--c-std", "0.1"], "needs --c-flops or --c-params"),
    (["--c-flops", "1.5"], "c_flops must be in (0, 1]"),
    (["--c-flops", "0.3", "--c-mcb", "1", "--c-std", "0.1"], "not several"),
    (["--c-flops", "0.3", "--n", "0"], "--n must be at least 1"),
    (["--c-flops", "0.3", "--r-max", "1.2"], "r_max must be in (0, 1)"),
    (["--c-flops", "abc"], "--c-flops takes a number or LO:HI, got 'abc'"),
    (["--c-flops", "0.1:0.2:0.3"], "--c-flops takes a number or LO:HI, got '0.1:0.2:0.3'"),
    (["--c-flops", "0.5:0.3"], "c_flops_max must be in (c_flops = 0.5, 1], got 0.3"),
])
def test_sample_bad_inputs(capsys, argv, words):
    try:
        code = main(["sample", *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err


def test_bench_space_reports_rates_and_acceptance(capsys):
    code, out, _ = run(capsys, "bench", "space", "--models", "resnet20", "--n", "200",
                       "--seconds", "0.2", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["unit_set"] for r in rows] == ["internal", "internal+residual"]
    for r in rows:
        assert r["decoded_inside"] == 200 and r["decode_per_s"] > 0 and r["reject_draws"] >= 4096
        assert 0 <= r["acceptance"] < 0.5


def test_non_finite_outputs_are_not_blamed_on_the_lr(monkeypatch, capsys):
    """Non-finite outputs at evaluation: exit 1, one line that does not advise a lower lr."""
    import evoprune.cli.commands
    from evoprune.errors import NonFiniteOutputError

    def broken(*_a, **_k):
        raise NonFiniteOutputError("the model produced non-finite outputs on the test set")

    monkeypatch.setattr(evoprune.cli.commands, "run_train", broken)  # where the CLI calls it
    assert main(["train", "--epochs", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not finite" in err[0] and "--lr" not in err[0]


def _trial_row(number, val_drop, *, uniform=False, retrain=()):
    return {"number": number, "val_drop": val_drop, "val_acc": 0.9, "seed": 11,
            "flops_ratio": 0.25, "params_ratio": 0.3, "mcb": 0.833, "recipe_std": 0.1,
            "is_uniform": uniform, "recipe": [0.5], "values": [val_drop],
            "retrain": [{"test_drop": d, "test_acc": 0.9, "mode": "finetune", "epochs": 5,
                         "seed": s} for s, d in enumerate(retrain)]}


def test_search_table_names_the_selection_split_and_averages_the_retraining_seeds():
    """The base on val and test, the proxy drops on val, a trial's retrained test drop the mean
    over its seeds (with their count)."""
    from evoprune.cli.commands import _format_search

    uniform = _trial_row(0, 2.0, uniform=True, retrain=(3.0,))
    r = {"study": "s", "storage": "sqlite:///s.db", "states": {"COMPLETE": 4},
         "base_val_acc": 0.9512, "base_test_acc": 0.9417, "split": "val", "seconds": 1.0,
         "best": [_trial_row(3, 0.75, retrain=(1.0, 2.5)), _trial_row(2, 1.5)],
         "uniform": uniform, "dashboard": "optuna-dashboard sqlite:///s.db"}
    lines = _format_search(r).splitlines()
    assert "base accuracy 95.12% (val), 94.17% (test)" in lines[0]
    assert lines[1] == "best trials (proxy, on the val split):"
    assert lines[3].split()[:2] == ["3", "0.75"] and "1.75 (finetune 5, 2 seeds)" in lines[3]
    assert lines[4].split()[:2] == ["2", "1.50"] and lines[4].rstrip().endswith("-")
    assert "3.00 (finetune 5, 1 seeds)" in lines[5] and lines[5].endswith("uniform")
    assert lines[-1].endswith("--recipe study:s:3 --out best.pt")
    old = {**r, "split": "test", "base_test_acc": 0.9512}  # a study before schema 3
    assert "base accuracy 95.12% (test);" in _format_search(old).splitlines()[0]


def test_retrain_table_has_one_line_per_trial_and_seed():
    """Why a trial was chosen, its seed, its val drop, test accuracy and test drop."""
    from evoprune.cli.commands import _format_retrain

    rows = [{"number": n, "chosen_as": c, "seed": s, "mode": "finetune", "epochs": 5,
             "val_drop": 0.5 + s + (n == 7), "test_acc": 0.93, "test_drop": 1.25 + s,
             "model_path": "m.pt", "is_uniform": c == "uniform", "skipped": s == 0}
            for n, c in ((0, "uniform"), (4, "top-k"), (7, "random")) for s in (0, 1)]
    lines = _format_retrain(rows).splitlines()
    assert lines[0].split()[:4] == ["trial", "chosen", "seed", "mode"] and len(lines) == 8
    # the winner: the lowest mean validation drop over its seeds (a tie goes to the lower trial)
    assert lines[7] == ("winner (lowest mean validation drop over its 2 seed(s)): trial 0 "
                        "(uniform), val 1.00 pp, test 1.75 pp")
    assert lines[3].split() == ["4", "top-k", "0", "finetune", "5", "0.50", "93.00%", "1.25",
                                "m.pt", "(already", "done)"]
    assert lines[6].split() == ["7", "random", "1", "finetune", "5", "2.50", "93.00%", "2.25",
                                "m.pt"]


def test_progress_lines_count_the_study_and_keep_a_resumed_studys_best(capsys):
    """A resumed study's line starts from its stored best; each trial line says k/n and the
    time left at this run's pace; the last one has no ETA; a new study starts afresh."""
    from evoprune.cli.progress import EventPrinter
    from evoprune.core import events as ev

    show = EventPrinter()
    assert not show.live  # pytest's captured stderr is no terminal: plain lines, no bar
    show(ev.SearchStarted("s", 6, 8, 0.9, 1, 2.5, 1))
    show(ev.TrialDone(6, 0, 3.0, 0.25, 0.3, 1.0, 0.1, False, 1.0, (3.0,)))
    show(ev.TrialDone(7, 0, 2.0, 0.25, 0.3, 1.0, 0.1, False, 1.0, (2.0,), "l2"))
    show(ev.SearchStarted("t", 0, 4, 0.9, 1))
    show(ev.TrialDone(0, 0, 9.0, 0.25, 0.3, 1.0, 0.1, True, 1.0, (9.0,)))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("best so far 2.50 pp (#1)")
    assert "best 2.50 pp (#1) | 7/8, ETA 0m 0" in lines[1]
    assert "baseline l2" in lines[2] and lines[2].endswith("best 2.00 pp (#7) | 8/8")
    assert "best so far" not in lines[3]
    assert "uniform" in lines[4] and "best 9.00 pp (#0) | 1/4, ETA" in lines[4]


def test_on_a_terminal_a_bar_shows_k_of_n_the_best_and_the_time_left():
    """A live printer draws a tqdm bar: the study's count (a resume's too), the best so far;
    the trial lines are written above it; the bar goes when the study is done."""
    import io

    from evoprune.cli.progress import EventPrinter
    from evoprune.core import events as ev

    out = io.StringIO()
    show = EventPrinter(out, live=True)
    show(ev.SearchStarted("s", 6, 8, 0.9, 1, 2.5, 1))
    assert show.bar is not None and (show.bar.n, show.bar.total) == (6, 8)
    show(ev.TrialDone(6, 0, 2.0, 0.25, 0.3, 1.0, 0.1, False, 1.0, (2.0,)))
    assert show.bar.n == 7
    text = out.getvalue()
    assert "7/8" in text and "best 2.00 pp (#6)" in text and "<" in text  # tqdm's time left
    assert "trial    6" in text
    show(ev.TrialDone(7, 0, 3.0, 0.25, 0.3, 1.0, 0.1, False, 1.0, (3.0,)))
    assert show.bar is None  # 8/8: closed
    show(ev.RetrainStarted(3, False, "finetune", 2, 0.01))
    assert (show.bar.n, show.bar.total) == (0, 2)
    show(ev.EpochDone("retrain", 1, 0.5, 0.9, 3))
    assert show.bar.n == 1 and "val 90.00%" in out.getvalue()


def test_search_help_lists_what_people_type_and_help_all_the_rest(capsys):
    """--help: at most 15 options; --help-all: every one; a hidden flag still parses."""
    import re

    from evoprune.cli.commands import build_parser, search_config

    def options(argv: list[str]) -> set[str]:
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 0
        text = capsys.readouterr().out
        return set(re.findall(r"^  (-{1,2}[a-z][\w-]*)", text, re.M))

    shown, every = options(["search", "--help"]), options(["search", "--help-all"])
    assert len(shown) <= 15 and {"--c-flops", "--c-mcb", "--n-trials", "--storage",
                                 "--config", "--set", "--help-all"} <= shown
    assert shown < every and {"--proxy-epochs", "--population", "--rungs"} <= every
    c = search_config(build_parser().parse_args(["search", "--c-flops", "0.25",
                                                 "--proxy-epochs", "3"]))
    assert c.proxy.epochs == 3


def test_retrain_reads_a_config_file_with_flags_and_set_on_top(tmp_path, capsys):
    """defaults < file < flags < --set; no study name anywhere: one line naming the flag, exit 2."""
    from evoprune.cli.commands import build_parser, retrain_config

    f = tmp_path / "retrain.toml"
    f.write_text('study_name = "s1"\nstorage = "sqlite:///x.db"\n'
                 '[settings]\nseeds = 2\nepochs = 7\ntop_k = 1\n')
    args = build_parser().parse_args(["retrain", "--config", str(f), "--epochs", "5",
                                      "--set", "top_k=4"])
    c = retrain_config(args)
    assert (c.study_name, c.storage, c.device) == ("s1", "sqlite:///x.db", "auto")
    assert (c.settings.seeds, c.settings.epochs, c.settings.top_k) == (2, 5, 4)
    assert main(["retrain", "--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["evoprune retrain: error: --study-name is required: the study to retrain from"]
    assert not (tmp_path / "none.db").exists()
