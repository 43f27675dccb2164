from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from evoprune.cli.commands import main
from evoprune.errors import EvopruneError, NonFiniteLossError
from evoprune.network.models import build_model
from evoprune.training.data import DeviceBatches, load_dataset
from evoprune.training.engine import (
    Schedule,
    adaptive_bn,
    evaluate,
    fit,
    resolve_device,
    retrain,
)
from evoprune.training.retraining import retrain_schedule


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny_model():
    torch.manual_seed(0)
    return build_model("digitsnet", 10, (1, 8, 8))


def test_device_batches_augment_on_the_device(digits):
    data = DeviceBatches(digits)
    gen = torch.Generator().manual_seed(0)
    batches = list(data.train_batches(500, gen))
    assert [len(y) for _, y in batches] == [500, 500, 150]  # the 1150 training images
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(digits.train_y.tolist())
    x, _ = batches[0]
    assert x.shape == (500, 1, 8, 8) and x.dtype == torch.float32
    plain = DeviceBatches(digits, augment=False)
    xp, yp = next(plain.train_batches(2000, torch.Generator().manual_seed(0)))
    ref = (digits.train_x.float() - 0.3 * 255) / (0.37 * 255)
    order = torch.randperm(1150, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(xp, ref[order]) and torch.equal(yp, digits.train_y[order])


def test_schedule_is_cosine_after_linear_warmup():
    s = Schedule(epochs=10, lr=0.1, warmup_epochs=2)
    assert s.lr_at(0, 10) == pytest.approx(0.005) and s.lr_at(19, 10) == pytest.approx(0.1)
    assert s.lr_at(20, 10) == pytest.approx(0.1)
    assert s.lr_at(60, 10) == pytest.approx(0.05)  # half-way through the cosine
    assert s.lr_at(99, 10) < 0.001


def test_fit_learns_digits_and_is_deterministic(digits):
    runs = []
    for _ in range(2):
        model = tiny_model()
        result = fit(model, DeviceBatches(digits), Schedule(epochs=3, lr=0.05, batch_size=64),
                     seed=1)
        runs.append((result, model))
    (a, ma), (b, mb) = runs
    assert a.val_acc > 0.85 and a.val_acc == b.val_acc and a.val_top5 is None
    assert [h["val_acc"] for h in a.history][-1] == a.val_acc
    assert all(torch.equal(p, q) for p, q in zip(ma.state_dict().values(), mb.state_dict().values()))
    assert [h["epoch"] for h in a.history] == [1, 2, 3] and a.images_per_s > 0
    assert a.to_dict()["schedule"]["lr"] == 0.05 and "test_acc" not in a.to_dict()


def test_planted_nan_stops_with_the_specific_error(digits):
    model = tiny_model()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at epoch 1, step 1"):
        fit(model, DeviceBatches(digits), Schedule(epochs=2))


def test_killed_training_resumes_at_the_next_epoch(tmp_path, digits):
    ckpt = tmp_path / "run.pt"
    schedule = Schedule(epochs=4, lr=0.05)
    whole_model = tiny_model()
    whole = fit(whole_model, DeviceBatches(digits), schedule, seed=2)

    def kill_after_two(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(), DeviceBatches(digits), schedule, seed=2, checkpoint=ckpt,
            progress=kill_after_two)
    epochs_seen = []
    resumed_model = tiny_model()
    resumed = fit(resumed_model, DeviceBatches(digits), schedule, seed=2, checkpoint=ckpt,
                  progress=lambda r: epochs_seen.append(r["epoch"]))
    assert epochs_seen == [3, 4]  # continues at the next epoch
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.val_acc == whole.val_acc  # bit-identical to the uninterrupted run
    assert all(torch.equal(p, q) for p, q in
               zip(whole_model.state_dict().values(), resumed_model.state_dict().values()))
    with pytest.raises(EvopruneError, match="another schedule"):
        fit(tiny_model(), DeviceBatches(digits), Schedule(epochs=5), checkpoint=ckpt)
    other_split = DeviceBatches(load_dataset("digits", val_size=0.3))
    with pytest.raises(EvopruneError, match="another train/validation split"):
        fit(tiny_model(), other_split, schedule, checkpoint=ckpt)


def test_adaptive_bn_changes_bn_statistics_and_nothing_else(digits):
    model = tiny_model().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adaptive_bn(model, DeviceBatches(digits), batches=5)
    assert not model.training  # its mode is given back
    after = model.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(before[k], after[k]) for k in stats)
    others = [k for k in before if k not in stats and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(before[k], after[k]) for k in others)


def test_top5_only_above_ten_classes():
    data = DeviceBatches(load_dataset("synthetic:3x8x8:20", synthetic_size=(50, 40)))
    torch.manual_seed(0)
    model = build_model("digitsnet", 20, (3, 8, 8))
    for split in ("val", "test"):
        acc = evaluate(model, data, split)
        assert acc.top5 is not None and acc.top1 <= acc.top5 <= 1
    result = fit(model, data, Schedule(epochs=1, batch_size=16))
    assert result.val_top5 == evaluate(model, data).top5 and result.val_top5 is not None


def test_devices_and_bad_schedules():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(EvopruneError, match="no CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(EvopruneError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(EvopruneError, match="lr must be"):
        Schedule(lr=float("nan"))


def test_train_cli_json_and_resume(tmp_path, capsys):
    out = tmp_path / "m.pt"
    argv = ["train", "--model", "digitsnet", "--epochs", "2", "--batch-size", "64", "--out",
            str(out), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert r["test_acc"] > 0.5 and r["out"] == str(out) and len(r["sha256"]) == 64
    assert r["val_acc"] > 0.5 and r["sizes"] == {"train": 1150, "val": 287, "test": 360}
    assert {"test_acc", "val_acc", "seconds", "images_per_s", "out"} <= set(r)
    assert captured.err.count("epoch ") == 2
    assert main(argv) == 0  # already complete: nothing retrained, same checkpoint
    again = json.loads(capsys.readouterr().out)
    assert again["sha256"] == r["sha256"] and again["test_acc"] == r["test_acc"]
    assert again["val_acc"] == r["val_acc"]
    # the checkpoint is a base model `prune` accepts
    assert main(["prune", "--model", "digitsnet", "--checkpoint", str(out),
                 "--recipe", "uniform:0.5", "--json"]) == 0


FAST = ["--model", "digitsnet", "--epochs", "1"]  # a refusal that fails to refuse stays cheap


@pytest.mark.parametrize(("argv", "words"), [
    (["--epochs", "0"], "epochs and batch size must be at least 1"),
    (["--device", "tpu"], "unknown device"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent/x"], "does not exist"),
    (["--out", "/nonexistent/dir/m.pt"], "does not exist"),
    (["--val-size", "1.5", *FAST], "--val-size 1.5: a fraction must be in (0, 1)"),
    (["--val-size", "1437", *FAST], "not fewer than the 1437 training images"),
])
def test_train_bad_inputs(capsys, argv, words):
    code = main(["train", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err


def test_retraining_schedules_follow_the_paper():
    original = Schedule(epochs=40, lr=0.1, batch_size=64)
    ft = retrain_schedule("finetune", original, epochs=5)
    assert (ft.epochs, ft.lr, ft.warmup_epochs, ft.batch_size) == (5, 0.01, 0.0, 64)
    rw = retrain_schedule("rewind", original, epochs=20)
    assert (rw.epochs, rw.lr, rw.warmup_epochs) == (20, 0.1, 5.0)
    assert retrain_schedule("scratch", original) == original
    assert retrain_schedule("scratch-b", original, flops_ratio=0.25).epochs == 160
    with pytest.raises(EvopruneError, match="unknown retraining mode"):
        retrain_schedule("lottery", original)


@pytest.mark.parametrize("mode", ["finetune", "rewind", "scratch", "scratch-b"])
def test_each_retraining_mode_runs_and_records_its_settings(digits, mode):
    from evoprune.network.pruning import prune

    base = tiny_model()
    fit(base, DeviceBatches(digits), Schedule(epochs=1, lr=0.05), seed=0)
    pruned = prune(base, [0.5] * 4, in_shape=(1, 8, 8))
    first_conv = pruned.layer1[0].conv1.weight.detach().clone()
    result = retrain(pruned, DeviceBatches(digits), mode, Schedule(epochs=2, lr=0.05),
                     epochs=1, flops_ratio=0.5)
    settings = result.to_dict()
    assert settings["mode"] == mode and settings["schedule"]["batch_size"] == 128
    assert settings["schedule"]["epochs"] == (2 if mode == "scratch-b" else 1)
    assert settings["schedule"]["lr"] == (0.01 if mode == "finetune" else 0.05)
    assert 0 <= result.val_acc <= 1 and len(result.history) == settings["schedule"]["epochs"]
    assert result.val_acc == evaluate(pruned, DeviceBatches(digits)).top1
    moved = (pruned.layer1[0].conv1.weight.detach() - first_conv).abs().mean()
    # scratch re-initialises (far from the pruned weights); fine-tuning modes start from them
    assert (moved > 0.02) if mode.startswith("scratch") else (moved < 0.02)


def test_scratch_reinitialises_before_training(digits):
    from evoprune.training.engine import reinitialise

    model = tiny_model()
    before = model.layer2[0].conv1.weight.detach().clone()
    reinitialise(model, seed=7)
    after = model.layer2[0].conv1.weight.detach()
    assert not torch.equal(before, after)
    assert torch.equal(after, reinitialise(tiny_model(), seed=7).layer2[0].conv1.weight)


def test_bench_train_compares_engine_and_reference(capsys):
    assert main(["bench", "train", "--cases", "resnet20-digits", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["train_images"] == 1150 and row["device"] in ("cpu", "cuda")
    assert row["engine_images_per_s"] > 0 and row["reference_images_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["engine_images_per_s"] / row["reference_images_per_s"])
    assert main(["bench", "train", "--cases", "alexnet-digits"]) == 2


def test_imagefolder_trains_through_the_dataloader_path(tmp_path):
    import numpy as np
    from PIL import Image

    from evoprune.training.data import FolderBatches, batches_for

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for k, cls in enumerate(("dark", "light")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (20, 20, 3)) + 190 * k
                Image.fromarray(img.astype(np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    data = load_dataset("imagefolder", tmp_path, image_size=16)
    batches = batches_for(data, "cpu", workers=0)
    assert isinstance(batches, FolderBatches) and batches.n_train == 10 and batches.n_val == 2
    torch.manual_seed(0)
    model = build_model("digitsnet", 2, (3, 16, 16))
    result = fit(model, batches, Schedule(epochs=3, lr=0.05, batch_size=4))
    assert len(result.history) == 3 and result.val_acc == 1.0  # dark vs light is easy
    assert evaluate(model, batches, split="test").top1 == 1.0


@pytest.mark.slow
def test_bench_train_sweep_times_every_option(capsys):
    assert main(["bench", "train", "--sweep", "--cases", "resnet20-digits", "--epochs", "1",
                 "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    options = [r["option"] for r in rows]
    assert options[0] == "default" and rows[0]["ratio_to_default"] == 1.0
    assert {"batch=64", "batch=256", "channels_last", "torch.compile"} <= set(options)
    assert all(r["images_per_s"] > 0 for r in rows)


def test_cached_base_trains_once_and_is_reused(tmp_path):
    from evoprune.training.base import TrainJob, cached_base

    job = TrainJob(model="digitsnet", epochs=1)
    epochs = []
    first = cached_base(job, tmp_path, progress=lambda r: epochs.append(r["epoch"]))
    second = cached_base(job, tmp_path, progress=lambda r: epochs.append(r["epoch"]))
    assert epochs == [1]  # the second call trained nothing
    assert first["out"] == second["out"] and first["sha256"] == second["sha256"]
    assert first["out"].startswith(str(tmp_path / "digitsnet-digits-"))
    other = cached_base(TrainJob(model="digitsnet", epochs=1, seed=1), tmp_path)
    assert other["out"] != first["out"] and len(list(tmp_path.glob("*.pt"))) == 2
    held_out = cached_base(TrainJob(model="digitsnet", epochs=1, val_size=100), tmp_path)
    assert held_out["out"] not in (first["out"], other["out"])  # the split changes the weights
    assert held_out["sizes"] == {"train": 1337, "val": 100, "test": 360}


def test_run_train_reports_validation_and_test_accuracy(tmp_path):
    """val_acc comes from fit, test_acc is one evaluation of the saved model on the test split."""
    from evoprune.core.checkpoint import load_weights
    from evoprune.training.base import TrainJob, run_train

    out = tmp_path / "m.pt"
    r = run_train(TrainJob(model="digitsnet", epochs=2, batch_size=64, out=str(out),
                           device="cpu"))
    assert r["sizes"] == {"train": 1150, "val": 287, "test": 360} and r["val_size"] == 0.2
    model = build_model("digitsnet", 10, (1, 8, 8))
    load_weights(model, out)
    data = DeviceBatches(load_dataset("digits"))
    assert r["val_acc"] == evaluate(model, data, "val").top1 > 0.5
    assert r["test_acc"] == evaluate(model, data, "test").top1 > 0.5
    assert r["test_top5"] is None and r["val_top5"] is None
    assert [h["epoch"] for h in r["history"]] == [1, 2] and "test_acc" not in r["history"][0]

@pytest.mark.slow  # CI's 15-minute budget; -m slow runs it
def test_sigkilled_training_resumes_at_the_next_epoch(tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "run.pt"
    cmd = [sys.executable, "-m", "evoprune", "train", "--model", "digitsnet", "--epochs", "6",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:
        if line.startswith("epoch   2/6"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(out, weights_only=True)["epoch"]
    assert 2 <= done < 6
    rerun = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0
    epochs = [int(line.split()[1].split("/")[0]) for line in rerun.stderr.splitlines()
              if line.startswith("epoch")]
    assert epochs == list(range(done + 1, 7))  # the next epoch, nothing redone
    assert [h["epoch"] for h in json.loads(rerun.stdout)["history"]] == [1, 2, 3, 4, 5, 6]


class _Recorder(torch.nn.Module):
    """A linear classifier over the mean image that records every training input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, 10)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.fc(x.mean(dim=(1, 2, 3))[:, None])


def test_fit_without_augmentation_leaves_the_data_augmenting(digits):
    """fit(augment=False) does not switch augmentation off for a later fit on the same data."""
    shared = DeviceBatches(digits)
    fit(tiny_model(), shared, Schedule(epochs=1, lr=0.05, augment=False), seed=3)
    later, fresh = tiny_model(), tiny_model()
    fit(later, shared, Schedule(epochs=1, lr=0.05), seed=4)
    fit(fresh, DeviceBatches(digits), Schedule(epochs=1, lr=0.05), seed=4)
    same = [torch.equal(p, q) for p, q in zip(later.state_dict().values(),
                                              fresh.state_dict().values())]
    assert all(same), f"{same.count(False)} of {len(same)} tensors differ from a fresh data's fit"
    assert shared.augment is True


def test_fit_without_augmentation_feeds_the_unpadded_images(digits):
    """A padded DeviceBatches trained with augment=False feeds the original 8x8 images."""
    data = DeviceBatches(digits)  # built to augment: stored padded by 1 pixel
    assert data.pad == 1 and data.train_x.shape[-2:] == (10, 10)
    model = _Recorder()
    fit(model, data, Schedule(epochs=1, lr=0.05, batch_size=2000, augment=False), seed=5)
    (x,) = model.seen
    order = torch.randperm(1150, generator=torch.Generator().manual_seed(5))
    ref = (digits.train_x.float() - 0.3 * 255) / (0.37 * 255)
    assert x.shape == (1150, 1, 8, 8)
    assert torch.allclose(x, ref[order])


class _NaNModel(torch.nn.Module):
    """A classifier whose outputs are all NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 10), float("nan"))


def test_non_finite_outputs_at_evaluation_raise_their_own_error(digits):
    """evaluate raises NonFiniteOutputError (not the training loss's NonFiniteLossError)."""
    from evoprune import errors

    error = getattr(errors, "NonFiniteOutputError", None)
    assert error is not None, "evoprune.errors has no NonFiniteOutputError"
    assert issubclass(error, RuntimeError) and not issubclass(error, NonFiniteLossError)
    with pytest.raises(error, match="non-finite outputs") as info:
        evaluate(_NaNModel(), DeviceBatches(digits))
    assert not isinstance(info.value, NonFiniteLossError)


class _NoTest(DeviceBatches):
    """Digits on the device whose test split raises when read (and holds no tensors)."""

    def __init__(self, data) -> None:
        super().__init__(data)
        self.test_x = self.test_y = None

    def test_batches(self, batch_size: int = 1024):
        raise AssertionError("the test split was read")


class _NoVal(DeviceBatches):
    """Digits on the device whose validation and test splits raise when read."""

    def val_batches(self, batch_size: int = 1024):
        raise AssertionError("the validation split was read")

    def test_batches(self, batch_size: int = 1024):
        raise AssertionError("the test split was read")


def test_fit_and_retrain_never_read_the_test_split(digits):
    """A scrambled or untouchable test split changes nothing fit or retrain return."""
    scrambled = replace(digits, test_y=digits.test_y[torch.randperm(360, generator=torch.Generator()
                                                                    .manual_seed(0))])
    runs = []
    for data in (DeviceBatches(digits), DeviceBatches(scrambled), _NoTest(digits)):
        model = tiny_model()
        result = fit(model, data, Schedule(epochs=2, lr=0.05, batch_size=64), seed=1)
        again = retrain(model, data, "finetune", Schedule(epochs=2, lr=0.05), epochs=1)
        runs.append((result, again, model))
    (a, ra, ma), (b, rb, mb), (c, rc, mc) = runs
    assert a.val_acc > 0.8 and a.val_acc == b.val_acc == c.val_acc
    def epochs(r):  # the history without its timing
        return [{k: v for k, v in h.items() if k != "images_per_s"} for h in r.history]

    assert epochs(a) == epochs(b) == epochs(c) and ra.val_acc == rb.val_acc == rc.val_acc
    assert all(torch.equal(p, q) and torch.equal(p, r) for p, q, r in
               zip(ma.state_dict().values(), mb.state_dict().values(), mc.state_dict().values()))
    # evaluate(split="test") does read it: the scrambled labels cost accuracy, _NoTest raises
    good, bad = (evaluate(ma, DeviceBatches(d), "test").top1 for d in (digits, scrambled))
    assert good > 0.8 and bad < 0.3
    with pytest.raises(AssertionError, match="test split was read"):
        evaluate(mc, _NoTest(digits), split="test")


def test_evaluate_reads_the_split_it_is_asked_for(digits):
    model = tiny_model()
    fit(model, DeviceBatches(digits), Schedule(epochs=1, lr=0.05), seed=0)
    data = DeviceBatches(digits, precision="fp32")  # the expected figures are computed in fp32
    model.eval()
    for split in ("val", "test"):
        x, y = getattr(digits, f"{split}_x"), getattr(digits, f"{split}_y")
        with torch.no_grad():
            expected = int((model(data.normalise(x)).argmax(1) == y).sum()) / len(y)
        assert evaluate(model, data, split).top1 == expected
    assert evaluate(model, data).top1 == evaluate(model, data, "val").top1  # the default
    with pytest.raises(EvopruneError, match="unknown split 'train': evaluate on val or test"):
        evaluate(model, data, "train")


def test_adaptive_bn_reads_training_batches_only(digits):
    """Recalibration on data whose val and test raise gives the same statistics as on plain data."""
    plain, guarded = tiny_model(), tiny_model()
    adaptive_bn(plain, DeviceBatches(digits), batches=3, seed=2)
    adaptive_bn(guarded, _NoVal(digits), batches=3, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(plain.state_dict().values(),
                                                 guarded.state_dict().values()))
