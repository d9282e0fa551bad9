"""Faults reach the user as one line naming the path and the cause, never a traceback; a failed stage is
recorded even on a full disk; Ctrl-C stops a bench cleanly. Disk faults are injected (a test cannot fill a disk)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.io import final_name, temp_path

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TEST = REPO / "data" / "sample" / "spec" / "test" / "annotations.coco.json"


def _full(path: object) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def test_temporary_names_map_back_to_the_file() -> None:
    assert final_name(temp_path(Path("/r/metrics.json"))) == Path("/r/metrics.json")
    assert final_name(Path("/r/a.json")) == Path("/r/a.json")


def test_disk_full_while_writing_results_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    import harness.evaluation

    def full(path: Path, text: str) -> None:
        raise _full(temp_path(Path(path)))

    monkeypatch.setattr(harness.evaluation, "write_text", full)  # metrics.json is written there
    code = main(
        ["evaluate", "--gt", str(SAMPLE_TEST), "--pred", str(SAMPLE_TEST), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"error: {tmp_path / 'o' / 'metrics.json'}: No space left on device (the disk "
        "is full; free some space (or write elsewhere) and run the same command again)"
    )


@pytest.mark.parametrize(
    ("code", "cause", "hint"),
    [
        (errno.EROFS, "Read-only file system", "the file system is read-only; choose another folder"),
        (errno.EACCES, "Permission denied", "no permission; choose a folder you can write to"),
        (errno.ENOSPC, "No space left on device", "the disk is full"),
    ],
)
def test_unwritable_out_is_refused_before_any_work(
    tmp_path: Path, monkeypatch, capsys, code: int, cause: str, hint: str
) -> None:
    real = Path.write_bytes

    def refuse(self: Path, data: bytes) -> int:
        if self.parent == tmp_path / "o":
            raise OSError(code, cause, str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    assert (
        main(["evaluate", "--gt", str(SAMPLE_TEST), "--pred", str(SAMPLE_TEST), "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        f"error: --out {tmp_path / 'o'}: cannot write there ({tmp_path / 'o' / 'write-probe'}: "
        f"{cause} ({hint}"
    )


def test_failed_stage_is_recorded_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    """The stage fails writing its checkpoint; the atomic write of the failure record fails too (no space for
    a temporary file); the record is rewritten in place, and `status` shows the failure and its cause."""
    import harness.io
    from harness.plan import Plan
    from harness.status import stage_status
    from harness.run import BenchSpec, Runner

    runner = Runner(
        BenchSpec(model="classical", data="sample", out=tmp_path / "run", device="cpu", bootstrap=0)
    )
    plan = Plan.create([runner], runner.run_dir)
    train = runner.stage("classical/train/cells")

    def full_checkpoint(stage: object) -> None:
        raise _full(runner.run_dir / "checkpoints" / "classical.json")

    attempts: list[str] = []

    def no_temp_file(path: Path, payload: dict) -> Path:  # what a full disk does to an atomic write
        attempts.append(payload["state"])
        raise _full(temp_path(Path(path)))

    monkeypatch.setattr(runner, "_stage_train", full_checkpoint)
    monkeypatch.setattr(harness.io, "write_json", no_temp_file)  # the writer behind failure records
    with pytest.raises(OSError):
        runner.execute(train)
    record = json.loads(runner.record_path(train).read_text())
    assert record["state"] == "failed" and record["error"] == (
        f"OSError: {runner.run_dir / 'checkpoints' / 'classical.json'}: No space left on device (the disk is full; "
        "free some space (or write elsewhere) and run the same command again)"
    )
    assert attempts == ["failed"]  # the atomic write was tried, failed, and the record was rewritten in place
    row = next(r for r in stage_status(plan) if r["stage"] == train.id)
    assert (row["state"], row["detail"]) == ("failed", record["error"])


def test_status_explains_a_stage_whose_record_could_not_be_written(tmp_path: Path) -> None:
    from harness.plan import Plan
    from harness.status import stage_status
    from harness.run import BenchSpec, Runner

    runner = Runner(
        BenchSpec(model="classical", data="sample", out=tmp_path / "run", device="cpu", bootstrap=0)
    )
    plan = Plan.create([runner], runner.run_dir)
    train = runner.stage("classical/train/cells")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runner._write_record(
        train, state="running", key=runner.key(train), pid=dead.pid, host=os.uname().nodename
    )
    row = next(r for r in stage_status(plan) if r["stage"] == train.id)
    assert row["state"] == "interrupted" and "the record could not be written: disk full?" in row["detail"]


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _state(path: Path) -> str:
    try:
        return json.loads(path.read_text()).get("state", "")
    except (OSError, ValueError):
        return ""


def test_ctrl_c_stops_a_bench_with_one_line_and_records_the_stage(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "bench",
            "--model",
            "classical",
            "--data",
            "sample",
            "--out",
            str(out),
            "--bootstrap",
            "0",
            "--modes",
            "finetuned",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env,
    )
    record = out / "stages" / "train__cells.stage.json"
    _wait_for(lambda: _state(record) == "running")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == "interrupted; run the same command again to resume (finished stages are kept)"
    )
    rec = json.loads(record.read_text())
    assert rec["state"] == "failed" and rec["error"].startswith("interrupted (Ctrl-C")
