"""Launchers: sequential vs parallel workers vs SLURM (fake sbatch/srun + submitit), crash and resume, status.

The matrix is the classical baseline plus CellPose with a seconds-long schedule (tests/fixtures/cellpose_tiny.yaml,
random init: it predicts junk, but hundreds of instances, so any difference in weights shows in the files).
Every run uses ``--threads 1``: on CPU, float reductions depend on the thread count, and bit-identical results
are promised for the same ``--threads``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NONET = REPO / "tests" / "_nonet"
FAKE_SLURM = REPO / "tests" / "fixtures" / "fake_slurm"
TINY = REPO / "tests" / "fixtures" / "cellpose_tiny.yaml"
MATRIX = ("--model", "classical,cellpose", "--config", f"cellpose={TINY}", "--data", "sample", "--bootstrap", "20",
          "--threads", "1", "--modes", "finetuned")
RESULT_FILES = ("results.json", "results.csv", "results.md", "per_image.csv")


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(NONET), str(REPO)]), TQDM_DISABLE="1",
               CUDA_VISIBLE_DEVICES="", **extra)
    for var in ("C6BENCH_WEIGHTS", "CELLPOSE_LOCAL_MODELS_PATH", "YOLO_CONFIG_DIR", "TORCH_HOME", "MPLCONFIGDIR"):
        (root / "caches" / var).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / "caches" / var)
    return env


def _c6bench(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _same_results(a: Path, b: Path, models: tuple[str, ...] = ("classical", "cellpose")) -> None:
    for model in models:
        for name in RESULT_FILES:
            assert (a / model / name).read_bytes() == (b / model / name).read_bytes(), f"{model}/{name}"
        for pred in sorted((a / model / "predictions").rglob("*.json")):
            other = b / model / pred.relative_to(a / model)
            assert pred.read_bytes() == other.read_bytes(), pred


def _logged(proc: subprocess.CompletedProcess, what: str) -> list[str]:
    return sorted(re.findall(rf"stage (\S+): {what}", proc.stderr))


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the matrix run stage after stage in one process."""
    root = tmp_path_factory.mktemp("sequential")
    _c6bench(_env(root), "bench", *MATRIX, "--out", str(root / "run"))
    return root / "run"


def test_sequential_run_layout(sequential: Path) -> None:
    plan = json.loads((sequential / "plan.json").read_text())
    assert [s["id"] for s in plan["stages"]] == [
        "classical/train/cells", "classical/predict/finetuned/cells/spec_test",
        "classical/evaluate/finetuned/cells/spec_test", "classical/results",
        "cellpose/train/cells", "cellpose/predict/finetuned/cells/spec_test",
        "cellpose/evaluate/finetuned/cells/spec_test", "cellpose/results"]
    assert plan["stages"][1]["deps"] == ["classical/train/cells"]
    assert plan["stages"][3]["deps"] == ["classical/evaluate/finetuned/cells/spec_test"]
    preds = json.loads((sequential / "cellpose" / "predictions" / "finetuned" / "cells" / "spec_test.json").read_text())
    assert len(preds["annotations"]) > 100  # the tiny model predicts plenty, so equality below means something
    manifest = json.loads((sequential / "cellpose" / "manifest.json").read_text())
    assert manifest["threads"] == 1 and set(manifest["wall_seconds"]) == {
        "train/cells", "predict/finetuned/cells/spec_test", "evaluate/finetuned/cells/spec_test"}


def test_parallel_workers_report_a_failed_stage_then_resume_to_the_sequential_results(sequential: Path,
                                                                                      tmp_path: Path) -> None:
    env = _env(tmp_path)
    broken = tmp_path / "cellpose_broken.yaml"
    # a failure only training can find (a bad value would be refused before any stage): no image has 1000 cells
    broken.write_text(TINY.read_text().replace("min_train_masks: 1,", "min_train_masks: 1000,"))
    out = tmp_path / "run"
    args = [a if a != f"cellpose={TINY}" else f"cellpose={broken}" for a in MATRIX]
    failed = _c6bench(env, "bench", *args, "--out", str(out), "--workers", "2", check=False)
    assert failed.returncode == 2
    assert "cellpose/train/cells: failed" in failed.stderr and "no image has at least 1000" in failed.stderr
    assert "cellpose/results: blocked — a dependency failed" in failed.stderr
    log = out / "cellpose" / "logs" / "train__cells.log"
    assert f"(log: {log})" in failed.stderr and "no image has at least 1000" in log.read_text()
    status = _c6bench(env, "status", str(out), "--json")
    states = {r["stage"]: r["state"] for r in json.loads(status.stdout)}
    assert states == {"classical/train/cells": "done", "classical/predict/finetuned/cells/spec_test": "done",
                      "classical/evaluate/finetuned/cells/spec_test": "done", "classical/results": "done",
                      "cellpose/train/cells": "failed", "cellpose/predict/finetuned/cells/spec_test": "blocked",
                      "cellpose/evaluate/finetuned/cells/spec_test": "blocked", "cellpose/results": "blocked"}

    fixed = _c6bench(env, "bench", *MATRIX, "--out", str(out), "--workers", "2")
    assert _logged(fixed, "reusing finished stage") == [
        "classical/evaluate/finetuned/cells/spec_test", "classical/predict/finetuned/cells/spec_test",
        "classical/results", "classical/train/cells"]
    assert "2 CPU workers, 1 thread(s) each" in fixed.stderr
    _same_results(sequential, out)


def test_sigkill_mid_training_then_rerun_equals_uninterrupted_run(sequential: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "bench", *MATRIX, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = out / "cellpose" / "stages" / "train__cells.stage.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if record.is_file() and json.loads(record.read_text())["state"] == "running":
            break
        time.sleep(0.05)
    time.sleep(1.0)  # inside cellpose's training loop
    assert proc.poll() is None, "the bench finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert not (out / "cellpose" / "results.json").exists()
    for path in out.rglob("*.json"):  # every file that exists is whole (written to a temporary name, renamed)
        json.loads(path.read_text())
    status = json.loads(_c6bench(env, "status", str(out), "--json").stdout)
    assert {r["stage"]: r["state"] for r in status}["cellpose/train/cells"] == "interrupted"

    rerun = _c6bench(env, "bench", *MATRIX, "--out", str(out))
    assert _logged(rerun, "reusing finished stage") == [
        "classical/evaluate/finetuned/cells/spec_test", "classical/predict/finetuned/cells/spec_test",
        "classical/results", "classical/train/cells"]
    assert _logged(rerun, "start")[0] == "cellpose/evaluate/finetuned/cells/spec_test"
    assert "cellpose/train/cells" in _logged(rerun, "start")
    _same_results(sequential, out)
    assert not list(out.rglob("*.tmp"))


# --------------------------------------------------------------------------------------------- slurm


def _calls(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]


def _drain(state: Path, env: dict[str, str], after_job=None) -> dict[str, str]:
    """The fake scheduler: run queued jobs in submission order; afterok on a job that did not succeed cancels."""
    outcome = json.loads((state / "outcome.json").read_text()) if (state / "outcome.json").exists() else {}
    for call in _calls(state):
        job_id = call["job_id"]
        if job_id in outcome:
            continue
        deps = call["directives"].get("dependency", "")
        needed = deps.removeprefix("afterok:").split(":") if deps else []
        array = call["directives"].get("array")
        tasks = range(int(array.split("%")[0].split("-")[1]) + 1) if array else [None]
        for task in tasks:
            name = job_id if task is None else f"{job_id}_{task}"
            if any(outcome.get(d) != "COMPLETED" for d in needed):
                outcome[name] = "CANCELLED (DependencyNeverSatisfied)"
                continue
            job_env = dict(env, SLURM_JOB_ID=job_id, SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0",
                           SLURM_NODEID="0", SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="localhost")
            if task is not None:
                job_env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=str(task))
            rc = subprocess.run(["bash", str(state / "queue" / f"{job_id}.sh")], env=job_env, capture_output=True,
                                timeout=600).returncode
            outcome[name] = "COMPLETED" if rc == 0 else "FAILED"
            if after_job:
                after_job(name)
        if array:
            outcome[job_id] = "COMPLETED" if all(outcome[f"{job_id}_{t}"] == "COMPLETED" for t in tasks) else "FAILED"
    (state / "outcome.json").write_text(json.dumps(outcome))
    return outcome


def test_slurm_jobs_dependencies_failure_and_resubmission(tmp_path: Path) -> None:
    """classical through submitit's SlurmExecutor with a fake sbatch/srun: job array, afterok chain, resources."""
    state = tmp_path / "slurm"
    env = _env(tmp_path, FAKE_SLURM_DIR=str(state), PATH=f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    launcher = tmp_path / "launcher.yaml"
    launcher.write_text("account: lab42\ntime_min: 90\ngpus_per_node: 1\ncpus_per_task: 4\nmem_gb: 16\n"
                        "array_parallelism: 1\nsetup: ['echo setting up']\n")
    out = tmp_path / "run"
    bench = ("bench", "--model", "classical", "--data", "sample", "--bootstrap", "20", "--threads", "1",
             "--out", str(out), "--launcher", "slurm", "--launcher-config", str(launcher), "--partition", "gpu")
    proc = _c6bench(env, *bench)
    assert f"submitted 6 job(s) for 6 stage(s); follow with: c6bench status {out}" in proc.stdout
    calls = _calls(state)
    assert [c["directives"]["job-name"] for c in calls] == [
        "c6-first-wave", "c6-classical-evaluate-zero_shot-cells-spec_test",
        "c6-classical-predict-finetuned-cells-spec_test", "c6-classical-evaluate-finetuned-cells-spec_test",
        "c6-classical-results"]
    first, ev_zero, predict, ev_tuned, results = (c["directives"] for c in calls)
    assert first["array"] == "0-1%1"  # zero-shot predict + train, throttled to 1 at a time
    assert ev_zero["dependency"] == "afterok:1001_0" and predict["dependency"] == "afterok:1001_1"
    assert ev_tuned["dependency"] == "afterok:1003" and results["dependency"] == "afterok:1002:1004"
    for d in (first, predict):
        assert d["gpus-per-node"] == "1" and d["partition"] == "gpu" and d["account"] == "lab42"
        assert d["time"] == "90" and d["cpus-per-task"] == "4" and d["mem"] == "16GB"
    assert "gpus-per-node" not in ev_zero and "gpus-per-node" not in results  # scoring needs no GPU
    assert "echo setting up" in (state / "queue" / "1001.sh").read_text()
    status = json.loads(_c6bench(env, "status", str(out), "--json").stdout)
    assert {r["state"] for r in status} == {"submitted"} and status[0]["detail"] == "job 1001_0"

    def break_checkpoint(job: str) -> None:  # the fine-tuned predict job will find no checkpoint
        if job == "1001_1":
            for path in (out / "checkpoints").rglob("classical.json"):
                path.unlink()

    outcome = _drain(state, env, break_checkpoint)
    assert outcome == {"1001_0": "COMPLETED", "1001_1": "COMPLETED", "1001": "COMPLETED", "1002": "COMPLETED",
                       "1003": "FAILED", "1004": "CANCELLED (DependencyNeverSatisfied)",
                       "1005": "CANCELLED (DependencyNeverSatisfied)"}
    status = {r["stage"]: r for r in json.loads(_c6bench(env, "status", str(out), "--json").stdout)}
    failed = status["classical/predict/finetuned/cells/spec_test"]
    assert failed["state"] == "failed" and "not a classical-adapter checkpoint" in failed["detail"]
    assert Path(failed["log"]).is_file() and failed["job_log"].endswith("1003_0_log.err")
    assert "not a classical-adapter checkpoint" in Path(failed["job_log"]).read_text()
    assert status["classical/results"]["state"] == "blocked"
    assert status["classical/evaluate/zero_shot/cells/spec_test"]["state"] == "done"
    text = _c6bench(env, "status", str(out)).stdout
    assert f"log: {failed['log']}" in text and "6 stages: 2 blocked, 3 done, 1 failed" in text

    again = _c6bench(env, *bench)  # resubmit: done stages stay, the broken train and everything after it go out
    assert "submitted 4 job(s)" in again.stdout
    resubmitted = [c["directives"]["job-name"] for c in _calls(state)[5:]]
    assert resubmitted == ["c6-classical-train-cells", "c6-classical-predict-finetuned-cells-spec_test",
                           "c6-classical-evaluate-finetuned-cells-spec_test", "c6-classical-results"]
    assert _calls(state)[-1]["directives"]["dependency"] == "afterok:1008"  # results waits only on the redone one
    _drain(state, env)
    assert {r["state"] for r in json.loads(_c6bench(env, "status", str(out), "--json").stdout)} == {"done"}

    local = tmp_path / "local"
    _c6bench(env, "bench", "--model", "classical", "--data", "sample", "--bootstrap", "20", "--threads", "1",
             "--out", str(local))
    for name in RESULT_FILES:
        assert (out / name).read_bytes() == (local / name).read_bytes(), name


def test_submitit_debug_and_local_executors_run_the_plan(tmp_path: Path, monkeypatch) -> None:
    """The same submission code on submitit's schedulerless executors (waves run in order, waiting for each)."""
    from harness.launch_slurm import SlurmOptions, submit
    from harness.plan import Plan
    from harness.run import BenchSpec, Runner
    from harness.status import stage_status

    results = {}
    for cluster in ("debug", "local"):
        out = tmp_path / cluster
        runner = Runner(BenchSpec(model="classical", data="sample", device="cpu", out=out, bootstrap=20, threads=1))
        plan = Plan.create([runner], out)
        jobs = submit(plan, SlurmOptions(cluster=cluster, time_min=10))
        assert len(jobs) == 6
        assert {r["state"] for r in stage_status(Plan.load(out))} == {"done"}
        results[cluster] = (out / "results.json").read_bytes()
    assert results["debug"] == results["local"]


def test_launcher_yaml_and_cli_errors(tmp_path: Path) -> None:
    from harness.errors import ConfigError
    from harness.launch_slurm import SlurmOptions
    from harness.plan import Plan

    bad = tmp_path / "launcher.yaml"
    bad.write_text("partiton: gpu\n")
    with pytest.raises(ConfigError, match=r"launcher.yaml: unknown launcher key\(s\) \['partiton'\]; allowed: .*partition"):
        SlurmOptions.from_yaml(bad)
    bad.write_text("cluster: pbs\n")
    with pytest.raises(ConfigError, match="cluster must be slurm, local or debug"):
        SlurmOptions.from_yaml(bad)
    with pytest.raises(ConfigError, match="no plan here"):
        Plan.load(tmp_path)
    assert SlurmOptions(partition="a").merged({"partition": None, "mem_gb": 8}).__dict__ == {
        **SlurmOptions(partition="a").__dict__, "mem_gb": 8}


def test_slurm_without_srun_says_where_to_run(tmp_path: Path, monkeypatch) -> None:
    from harness.errors import ConfigError
    from harness.launch_slurm import SlurmOptions, submit
    from harness.plan import Plan
    from harness.run import BenchSpec, Runner

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch/srun
    plan = Plan.create([Runner(BenchSpec(model="classical", data="sample", device="cpu", out=tmp_path / "r"))],
                              tmp_path / "r")
    with pytest.raises(ConfigError, match="Submit from a SLURM login node"):
        submit(plan, SlurmOptions())


def test_stage_ids_and_missing_stage(tmp_path: Path) -> None:
    from harness.errors import ConfigError
    from harness.plan import Plan
    from harness.run import BenchSpec, Runner, run_stage
    from harness.status import stage_status

    Plan.create([Runner(BenchSpec(model="classical", data="sample", device="cpu", out=tmp_path))], tmp_path)
    with pytest.raises(ConfigError, match="no stage 'classical/train/soma'"):
        run_stage(tmp_path, "classical/train/soma")
    shutil.rmtree(tmp_path / "stages", ignore_errors=True)
    rows = stage_status(Plan.load(tmp_path))
    assert [(r["stage"], r["state"], r["detail"]) for r in rows][:2] == [
        ("classical/predict/zero_shot/cells/spec_test", "pending", "ready"),
        ("classical/evaluate/zero_shot/cells/spec_test", "pending",
         "waiting for classical/predict/zero_shot/cells/spec_test")]


def test_example_launcher_yaml_loads() -> None:
    from harness.launch_slurm import SlurmOptions

    options = SlurmOptions.from_yaml(REPO / "configs" / "launchers" / "slurm.yaml")
    assert (options.partition, options.gpus_per_node, options.time_min, options.cluster) == ("gpu", 1, 2880, "slurm")


def test_status_reports_a_job_that_slurm_ended(tmp_path: Path, monkeypatch) -> None:
    """A job killed by its time limit never records a failure itself: status asks sacct and says why."""
    from harness.plan import Plan, job_record_path
    from harness.run import BenchSpec, Runner
    from harness.status import stage_status

    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path / "slurm"))
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "outcome.json").write_text(json.dumps({"77": "TIMEOUT", "78": "RUNNING"}))
    out = tmp_path / "run"
    Plan.create([Runner(BenchSpec(model="classical", data="sample", device="cpu", out=out))], out)
    for stage_id, job in (("classical/train/cells", "77"), ("classical/predict/zero_shot/cells/spec_test", "78")):
        path = job_record_path(out, stage_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"job_id": job, "log": "x.log", "job_log": f"{job}_0_log.err"}))
    rows = {r["stage"]: r for r in stage_status(Plan.load(out))}
    assert (rows["classical/train/cells"]["state"], rows["classical/train/cells"]["detail"]) == (
        "failed", "slurm job 77: TIMEOUT")
    assert rows["classical/predict/zero_shot/cells/spec_test"]["state"] == "submitted"
    assert rows["classical/predict/finetuned/cells/spec_test"]["state"] == "blocked"
