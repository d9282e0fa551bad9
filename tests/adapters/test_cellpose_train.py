"""Our cellpose 3 training loop (`adapters._upstream.cellpose_train`) against cellpose's own ``train_seg``.

Tiny synthetic images (disks on noise), random-init networks, one CPU thread: the loop must end with exactly
train_seg's weights and losses for the same inputs, read flow targets back from the cache instead of recomputing
them, and a training interrupted after epoch k and started again in its folder must end with exactly the weights
of an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cellpose")

from adapters._upstream import cellpose_train as ct  # noqa: E402

#: quick-profile-like (AdamW, drawn images, rescaling); 8 epochs cover the warm-up and the logged epochs 0 and 5
SCHEDULE = {"epochs": 8, "learning_rate": 0.005, "weight_decay": 1e-5, "batch_size": 2, "sgd": False,
            "nimg_per_epoch": 4, "rescale": True, "scale_range": 0.5, "bsize": 32, "min_train_masks": 1}


def disks(seed: int, shape: tuple[int, int] = (64, 80), n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A float32 image of bright disks on noise and its int32 label map (later disks paint over earlier)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    image = rng.normal(10, 2, shape).astype(np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, n + 1):
        cy, cx, r = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8), rng.integers(4, 9)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        labels[disk] = k
        image[disk] += 30
    return image, labels


TRAIN = [disks(s) for s in range(3)]
VAL = [disks(10 + s) for s in range(2)]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A derived-array cache per test (and one thread: the same sums in the same order)."""
    import torch

    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def network() -> Any:
    """A random-init cellpose 3 network (seeded), as the adapter builds it."""
    import torch

    from adapters._upstream.cellpose_common import import_cellpose

    torch.manual_seed(0)
    return import_cellpose("cellpose").CellposeModel(gpu=False, device=torch.device("cpu"), pretrained_model=None,
                                                     mkldnn=False, nchan=2).net


def prepared(pairs: list[tuple[np.ndarray, np.ndarray]], net: Any) -> ct.TrainSet:
    return ct.prepare(((str(i), im, lm) for i, (im, lm) in enumerate(pairs)), net.device, "flows")


def ours(tmp: Path, schedule: dict[str, Any], net: Any | None = None, **extra: Any) -> tuple[dict, np.ndarray]:
    net = net if net is not None else network()
    sched = ct.Schedule(**{**schedule, **extra})
    _, losses, _ = ct.train(net, prepared(TRAIN, net), prepared(VAL, net), sched, tmp, "net", "scratch")
    return copy.deepcopy(net.state_dict()), losses


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert list(a) == list(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []


@pytest.mark.parametrize("schedule", [SCHEDULE, {**SCHEDULE, "sgd": True, "learning_rate": 0.05,
                                                 "nimg_per_epoch": None, "batch_size": 3, "rescale": False,
                                                 "scale_range": 1.0}],
                         ids=["adamw-drawn", "sgd-permuted-no-rescale"])
def test_our_loop_ends_with_train_seg_weights(tmp_path: Path, schedule: dict[str, Any]) -> None:
    from cellpose import train as cp_train

    net = network()
    (tmp_path / "seg").mkdir()
    _, seg_losses, _ = cp_train.train_seg(
        net, train_data=[im for im, _ in TRAIN], train_labels=[lm.copy() for _, lm in TRAIN],
        test_data=[im for im, _ in VAL], test_labels=[lm.copy() for _, lm in VAL], normalize=True,
        save_path=str(tmp_path / "seg"), model_name="net", n_epochs=schedule["epochs"],
        learning_rate=schedule["learning_rate"], weight_decay=schedule["weight_decay"],
        batch_size=schedule["batch_size"], nimg_per_epoch=schedule["nimg_per_epoch"],
        rescale=schedule["rescale"], scale_range=schedule["scale_range"],
        min_train_masks=schedule["min_train_masks"], save_every=100, channels=[0, 0], SGD=schedule["sgd"],
        bsize=schedule["bsize"])
    weights, losses = ours(tmp_path / "ours", schedule)
    assert_same_weights(net.state_dict(), weights)
    assert (tmp_path / "ours" / "models" / "net").read_bytes() == (tmp_path / "seg" / "models" / "net").read_bytes()
    assert losses.tolist() == seg_losses.tolist()
    assert float(weights["diam_labels"]) == float(net.diam_labels)


def test_learning_rates_are_train_seg_schedule() -> None:
    lr = ct.learning_rates(40, 0.1)
    assert lr.tolist() == np.linspace(0, 0.1, 10).tolist() + [0.1] * 30  # warm-up from LR 0 over 10 epochs
    long = ct.learning_rates(150, 0.1)  # > 100 epochs: the last 50 are 10 halvings of 5 epochs
    assert len(long) == 150 and long[99] == 0.1 and long[100:105].tolist() == [0.05] * 5
    assert long[-1] == 0.1 / 2**10
    paper = ct.learning_rates(1000, 0.1)  # > 300 epochs: the last 100 are 10 halvings of 10 epochs
    assert len(paper) == 1000 and paper[899] == 0.1 and paper[900:910].tolist() == [0.05] * 10
    assert paper[-1] == 0.1 / 2**10


def test_flow_targets_are_computed_once_per_label_map(caplog: pytest.LogCaptureFixture) -> None:
    from cellpose import dynamics

    net = network()
    with caplog.at_level(logging.INFO, logger=ct.logger.name):
        first = prepared(TRAIN, net)
        again = prepared(TRAIN, net)
    assert "cellpose flows: targets of 3 image(s), 0 read back from the cache" in caplog.text
    assert "cellpose flows: targets of 3 image(s), 3 read back from the cache" in caplog.text
    assert (first.cached, again.cached) == (0, 3)
    assert again.flows == first.flows and again.images == first.images
    for (_, labels), path, fg in zip(TRAIN, first.flows, first.foregrounds, strict=True):
        expected = dynamics.labels_to_flows([labels.copy()], device=net.device)[0]
        assert np.array_equal(np.load(path), expected[2:4])
        assert np.array_equal(fg, expected[1] > 0.5)
    # another label map is another key (the image's stays the same)
    moved = TRAIN[0][1].copy()
    moved[moved == 1] = 0
    other = ct.prepare([("m", TRAIN[0][0], moved)], net.device, "flows")
    assert other.flows[0] != first.flows[0] and other.images[0] == first.images[0]


class Interrupted(RuntimeError):
    pass


def test_an_interrupted_training_resumes_and_ends_with_the_same_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    whole, whole_losses = ours(tmp_path / "whole", SCHEDULE)
    save = ct._save_checkpoint

    def save_then_stop(path: Path, net: Any, optimizer: Any, state: dict[str, Any]) -> None:
        save(path, net, optimizer, state)
        if state["epoch"] == 5:  # stopped right after the checkpoint of epoch 4 (0-based)
            raise Interrupted

    monkeypatch.setattr(ct, "_save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        ours(tmp_path / "split", SCHEDULE, checkpoint_minutes=0)
    assert (tmp_path / "split" / ct.CHECKPOINT).is_file()
    assert not (tmp_path / "split" / "models").exists()
    monkeypatch.setattr(ct, "_save_checkpoint", save)
    with caplog.at_level(logging.INFO, logger=ct.logger.name):
        resumed, losses = ours(tmp_path / "split", SCHEDULE, checkpoint_minutes=0)
    assert "resumed from" in caplog.text and "at epoch 5 of 8" in caplog.text
    assert_same_weights(whole, resumed)
    assert losses.tolist() == whole_losses.tolist()
    assert not (tmp_path / "split" / ct.CHECKPOINT).exists()  # removed once the network file is written


def test_a_checkpoint_of_other_inputs_is_not_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    save = ct._save_checkpoint

    def save_then_stop(path: Path, net: Any, optimizer: Any, state: dict[str, Any]) -> None:
        save(path, net, optimizer, state)
        raise Interrupted

    monkeypatch.setattr(ct, "_save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        ours(tmp_path, SCHEDULE, checkpoint_minutes=0)
    monkeypatch.setattr(ct, "_save_checkpoint", save)
    with caplog.at_level(logging.INFO, logger=ct.logger.name):
        weights, _ = ours(tmp_path, {**SCHEDULE, "learning_rate": 0.004}, checkpoint_minutes=0)
    assert "written for other inputs or another schedule; training from epoch 0" in caplog.text
    assert "resumed from" not in caplog.text
    assert_same_weights(weights, ours(tmp_path / "fresh", {**SCHEDULE, "learning_rate": 0.004})[0])


def test_checkpoints_follow_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint is written once `checkpoint_minutes` of training have passed since the last one."""
    clock = iter(np.arange(0.0, 1e6, 50.0))  # the loop reads its clock at the start and after each epoch
    monkeypatch.setattr(ct, "_now", lambda: float(next(clock)))
    epochs: list[int] = []
    save = ct._save_checkpoint
    monkeypatch.setattr(ct, "_save_checkpoint", lambda p, n, o, s: (epochs.append(s["epoch"]), save(p, n, o, s)))
    ours(tmp_path, SCHEDULE, checkpoint_minutes=2.0)
    # epochs of 50 s: 150 s >= 2 min after the 3rd and the 6th (none after the last: the network file follows)
    assert epochs == [3, 6]


CHILD = """
import importlib.util, time
from pathlib import Path
import torch
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location("cellpose_train_test", {test!r})
test = importlib.util.module_from_spec(spec)
spec.loader.exec_module(test)
save = test.ct._save_checkpoint
def slow_save(*args):  # time for the parent to see the checkpoint and kill
    save(*args)
    time.sleep(0.5)
test.ct._save_checkpoint = slow_save
test.ours(Path({out!r}), test.SCHEDULE, checkpoint_minutes=0)
"""


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path: Path, subprocess_env: dict[str, str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A child process training with a checkpoint every epoch is SIGKILLed mid-run; the resumed run ends with
    the uninterrupted run's weights."""
    import torch

    out = tmp_path / "killed"
    script = CHILD.format(test=str(Path(__file__).resolve()), out=str(out))
    env = {**subprocess_env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        path = out / ct.CHECKPOINT
        if path.is_file() and torch.load(str(path), weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.1)
    assert child.poll() is None, "the child finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with caplog.at_level(logging.INFO, logger=ct.logger.name):
        resumed, _ = ours(out, SCHEDULE, checkpoint_minutes=0)
    assert "resumed from" in caplog.text
    assert_same_weights(resumed, ours(tmp_path / "whole", SCHEDULE)[0])


@pytest.mark.slow
def test_a_bench_killed_mid_training_resumes_from_the_checkpoint(tmp_path: Path,
                                                                 subprocess_env: dict[str, str]) -> None:
    """The user's path: ``c6bench bench`` SIGKILLed after a checkpoint of the cellpose train stage, run again
    with the same --out: the stage continues from the checkpoint (logged) and every result file equals an
    uninterrupted run's."""
    import json

    import torch

    tiny = Path(__file__).resolve().parents[1] / "fixtures" / "cellpose_tiny.yaml"
    config = tmp_path / "cellpose.yaml"
    config.write_text(tiny.read_text().replace("epochs: 4,", "epochs: 12,").replace("checkpoint_minutes: 5",
                                                                                   "checkpoint_minutes: 0"))
    env = {**subprocess_env, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "C6BENCH_WEIGHTS": str(tmp_path / "c")}
    args = [sys.executable, "-m", "harness", "bench", "--model", "cellpose", "--config", str(config), "--data",
            "sample", "--threads", "1", "--modes", "finetuned", "--bootstrap", "0"]
    whole = subprocess.run([*args, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(out.glob("checkpoints/**/resume.pt"))
        if found and torch.load(str(found[0]), weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the bench finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run([*args, "--out", str(out)], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "cellpose: resumed from" in rerun.stderr
    resumed = json.loads(next(out.glob("checkpoints/**/training.json")).read_text())["resumed_from"]
    assert resumed >= 3
    for name in ("results.json", "results.csv", "per_image.csv"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
