"""Several processes on one run dir: a second bench is refused, a stage runs once, workers die with their
launcher, and every file is written by `harness.io` (one atomic writer with unique temporary names)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import concurrency
from harness.concurrency import Busy, hold

REPO = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _bench(out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
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
            *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_lock_is_held_once_and_names_its_holder(tmp_path: Path) -> None:
    with hold(tmp_path / "x.lock", "run dir X", "wait"):
        with pytest.raises(
            Busy, match=rf"run dir X is in use by a process \(pid {os.getpid()} on .*, since .*\); wait"
        ):
            with hold(tmp_path / "x.lock", "run dir X", "wait"):
                pass
    with hold(tmp_path / "x.lock", "run dir X", "wait"):  # released: free again
        pass


def test_second_bench_on_the_same_out_is_refused_while_the_first_runs(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    out = tmp_path / "run"
    first = _bench(out, subprocess_env)
    _wait_for(lambda: _record(out / "stages" / "train__cells.stage.json").get("state") == "running")
    plan = (out / "plan.json").read_bytes()
    second = subprocess.run(
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
            "50",
            "--modes",
            "finetuned",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=120,
        check=False,
    )
    assert second.returncode == 2
    assert re.search(
        rf"error: run dir {re.escape(str(out))} is in use by c6bench bench \(pid {first.pid} on .*\); "
        r"wait for it to finish",
        second.stderr,
    ), second.stderr
    assert (out / "plan.json").read_bytes() == plan  # its plan (other --bootstrap) was not written over
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert err.count(": start (key") == 4  # train, predict, evaluate, results: each once


def test_a_stage_already_running_is_not_started_twice(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    from harness.concurrency import stage_lock
    from harness.plan import Plan
    from harness.run import BenchSpec, Runner

    runner = Runner(
        BenchSpec(model="classical", data="sample", out=tmp_path / "run", device="cpu", modes=["finetuned"])
    )
    Plan.create([runner], runner.run_dir)
    stage = runner.stage("classical/train/cells")
    with stage_lock(runner.record_path(stage), stage.id):
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "stage", str(runner.run_dir), stage.id],
            capture_output=True,
            text=True,
            env=subprocess_env,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 2
    assert (
        f"error: stage {stage.id} is in use by" in proc.stderr
        and "instead of starting it twice" in proc.stderr
    )
    assert not runner.record_path(stage).is_file()  # the refused process wrote nothing


def test_workers_stop_when_their_launcher_is_killed(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    out = tmp_path / "run"
    launcher = _bench(out, subprocess_env, "--workers", "2")
    record = out / "stages" / "train__cells.stage.json"
    _wait_for(lambda: _record(record).get("state") == "running")
    worker = _record(record)["pid"]
    assert worker != launcher.pid
    launcher.send_signal(signal.SIGKILL)
    launcher.communicate(timeout=60)

    def gone() -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        return False

    _wait_for(gone, timeout=60)
    rec = _record(record)
    assert rec["state"] == "failed" and rec["error"].startswith("interrupted"), rec


def test_a_worker_raises_for_its_first_sigint_only() -> None:
    """PDEATHSIG and the watchdog both interrupt a worker whose launcher died; the second one must not cut short
    the stage's clean-up (writing its "failed" record), or the record stays "running" (a CI failure, once)."""
    previous = signal.signal(signal.SIGINT, concurrency._interrupt_once)
    concurrency._interrupted.clear()
    cleaned_up = False
    try:
        with pytest.raises(KeyboardInterrupt):
            try:
                signal.raise_signal(signal.SIGINT)
            finally:
                signal.raise_signal(signal.SIGINT)  # the second one, mid clean-up
                cleaned_up = True
    finally:
        signal.signal(signal.SIGINT, previous)
        concurrency._interrupted.clear()
    assert cleaned_up


WRITES = re.compile(
    r"\.write_text\(|\.write_bytes\(|json\.dump\(|\.open\([^)]*[\"'][wa]b?[\"']|open\([^)]*[\"'][wa]b?[\"']"
    r"|imwrite\(|torch\.save\(|\.save\("
)
ALLOWED = {  # (file, line fragment): writers that are not result files, or already go through harness.io
    ("harness/io.py", ""),  # the atomic writer itself (and its in-place fallback for a full disk)
    ("harness/concurrency.py", 'path.open("a+")'),  # a lock file keeps its inode: never replaced
    ("harness/launch_local.py", 'out.open("w")'),  # a worker's console stream (a log), not a result
    ("harness/download.py", "part.open("),  # resumable download into .part, renamed once verified
    # TorchAdapter.save (adapters/torch_base.py): torch.save through atomic_path
    ("adapters/_upstream/cellseg1/checkpoint.py", "adapter.save("),
    ("adapters/_upstream/cellseg1/train.py", "checkpoint.save("),  # the one above
    ("adapters/mediar.py", "self.save("),
}


def _allowed(rel: str, line: str, previous: str) -> bool:
    if any(rel == f and frag in line for f, frag in ALLOWED):
        return True
    return "tmp" in line or "partial" in line or "atomic_path" in previous  # writes into an atomic_path temp


@pytest.mark.parametrize("folder", ["harness", "adapters", "benchmarks"])
def test_every_file_is_written_through_harness_io(folder: str) -> None:
    offenders = []
    for path in sorted((REPO / folder).rglob("*.py")):
        rel = str(path.relative_to(REPO))
        lines = path.read_text().splitlines()
        for k, line in enumerate(lines):
            code = line.split("#")[0]
            if WRITES.search(code) and not _allowed(rel, code, " ".join(lines[max(0, k - 3) : k])):
                offenders.append(f"{rel}:{k + 1}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
