"""``c6bench status``: the state of every stage of a run root, where its log is, and why it stopped.

Reads only the stage records and job submissions (`harness.plan.Plan.record`), plus ``sacct`` for cluster jobs
that ended badly; it builds no runner and imports no launcher.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from typing import Any

from harness.plan import Plan

logger = logging.getLogger(__name__)


def stage_status(plan: Plan) -> list[dict[str, Any]]:
    """One row per stage: state (done, running, failed, submitted, pending, blocked, interrupted) and where to look."""
    rows: list[dict[str, Any]] = []
    state_of: dict[str, str] = {}
    for stage in plan.stages:
        rec = plan.record(stage)
        state = rec.get("state", "pending")
        if state == "running" and rec.get("host") == platform.node() and not _pid_alive(rec.get("pid")):
            state = "interrupted"
        if state in ("pending", "submitted") and any(state_of.get(d) in ("failed", "blocked", "interrupted")
                                                     for d in stage.deps):
            state = "blocked"  # under SLURM its afterok job will never start
        elif state in ("submitted", "running") and rec.get("job_id"):
            ended = _sacct_failure(rec["job_id"])
            if ended:  # the job ended without the stage finishing: time limit, memory, node failure, cancel
                state, rec = "failed", {**rec, "error": f"slurm job {rec['job_id']}: {ended}"}
        state_of[stage.id] = state
        detail = {"done": f"{rec.get('seconds', 0):.1f} s",
                  "failed": rec.get("error", ""),
                  "submitted": f"job {rec.get('job_id')}",
                  "running": f"pid {rec.get('pid')} on {rec.get('host')}" + (
                      f", job {rec['job_id']}" if rec.get("job_id") else ""),
                  "interrupted": "its process ended without recording a result (killed, or the record could "
                                 "not be written: disk full?); see its log, re-run to resume",
                  "blocked": "a dependency did not finish",
                  "pending": "waiting for " + ", ".join(d for d in stage.deps if state_of.get(d) != "done")
                  if any(state_of.get(d) != "done" for d in stage.deps) else "ready"}[state]
        rows.append({"stage": stage.id, "state": state, "detail": detail,
                     "log": rec.get("log") or str(plan.run_dir(stage.model) / "logs"),
                     "job_log": rec.get("job_log", "")})
    return rows


SLURM_FAILURES = ("FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                  "DEADLINE")


def _sacct_failure(job_id: str) -> str | None:
    """The SLURM end state of a job that ended badly (``TIMEOUT``, ``OUT_OF_MEMORY`` …), else None (or no sacct)."""
    sacct = shutil.which("sacct")
    if not sacct:
        return None
    try:
        out = subprocess.run([sacct, "-n", "-P", "-X", "-j", str(job_id), "-o", "State"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    states = out.stdout.split()
    return states[0] if states and states[0] in SLURM_FAILURES else None


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
