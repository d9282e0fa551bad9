"""Several processes on one run dir: a lock per run dir and per stage, and workers that end with their parent.

* **Run dir**: a launcher (``c6bench bench``, `harness.run.Runner.run`) holds ``RUN_DIR/.c6bench.lock`` from
  before it writes ``plan.json`` until its stages are done (SLURM: until they are submitted). A second bench
  on the same ``--out`` fails at once naming the holder (pid, host, start time), instead of running every
  stage a second time or rewriting the plan under the first one's workers.
* **Stage**: each stage holds ``stages/<stage>.lock`` while it runs, whoever runs it (a local worker, a
  SLURM job, ``c6bench stage``); a second process asked to run the same stage fails naming the holder.
* Locks are ``flock`` locks on files that are never replaced (the lock lives on the inode), released by the
  kernel when the holder exits, even on SIGKILL; Linux NFS clients map them onto NFS locks.
* **Workers** (``c6bench stage`` started by ``--workers``) end when the launcher that started them dies:
  Linux delivers SIGINT to them (``PR_SET_PDEATHSIG``), and a watchdog thread notices a changed parent
  elsewhere. The stage then records itself as interrupted. Both fire when the launcher dies, so a worker
  raises KeyboardInterrupt for the first SIGINT only: a second one landing in the stage's clean-up would
  cut short the write of its "failed" record and leave it "running".
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import C6BenchError

logger = logging.getLogger(__name__)

LOCK_NAME = ".c6bench.lock"
PARENT_ENV = "C6BENCH_PARENT_PID"
_PR_SET_PDEATHSIG = 1


class Busy(C6BenchError):
    """A run dir or stage is held by another live process; the message names it."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"{info.get('command', 'a process')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


@contextmanager
def hold(path: Path | str, what: str, hint: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if absent) or raise `Busy` naming the holder and `hint`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise Busy(f"{what} is in use by {_holder(path)}; {hint}") from None
    try:
        handle.seek(0)
        handle.truncate()
        command = (
            f"c6bench {sys.argv[1]}" if sys.argv[1:2] and not sys.argv[1].startswith("-") else "a process"
        )
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": platform.node(),
                    "command": command,
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
        )
        handle.flush()
        yield
    finally:
        try:
            handle.seek(0)
            handle.truncate()
        except OSError:  # a full disk cannot stop the release
            pass
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def run_dir_lock(root: Path | str) -> Any:
    """The lock a launcher holds on its run dir (see the module docstring)."""
    root = Path(root)
    return hold(
        root / LOCK_NAME,
        f"run dir {root}",
        f"wait for it to finish (`c6bench status {root}` shows its stages) or choose another --out",
    )


def stage_lock(record_path: Path, stage_id: str) -> Any:
    """The lock a process holds while it runs one stage (next to the stage's record)."""
    return hold(
        record_path.with_suffix(".lock"),
        f"stage {stage_id}",
        "it is being run right now; wait for it (`c6bench status`) instead of starting it twice",
    )


# --------------------------------------------------------------------------------------------- workers


def exit_with_parent() -> None:
    """In a worker started by a launcher (``C6BENCH_PARENT_PID`` set): stop when that launcher dies."""
    expected = os.environ.get(PARENT_ENV)
    if not expected:
        return
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog below still works
            logger.debug("prctl(PR_SET_PDEATHSIG) unavailable")
    signal.signal(signal.SIGINT, _interrupt_once)
    if os.getppid() != int(expected):  # the launcher died before we got here
        raise KeyboardInterrupt
    threading.Thread(target=_watch, args=(int(expected),), name="parent-watch", daemon=True).start()


_interrupted = threading.Event()


def _interrupt_once(signum: int, frame: Any) -> None:
    """A worker's SIGINT handler: the first raises KeyboardInterrupt, later ones are logged and dropped."""
    if _interrupted.is_set():
        logger.debug("signal %d again while stopping; ignored so the stage can record itself", signum)
        return
    _interrupted.set()
    raise KeyboardInterrupt


def _watch(parent: int, every_s: float = 2.0, grace_s: float = 60.0) -> None:
    import _thread

    while os.getppid() == parent:
        time.sleep(every_s)
    logger.error("the launcher (pid %d) is gone; stopping this worker", parent)
    _thread.interrupt_main()
    time.sleep(grace_s)
    os._exit(130)  # the main thread did not come back from native code in time


def stop(processes: Sequence[Any], wait_s: float = 10.0) -> None:
    """Interrupt child processes still running (they record their stage as interrupted), then kill stragglers."""
    alive = [p for p in processes if p.poll() is None]
    for proc in alive:
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + wait_s
    for proc in alive:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: kill it
            proc.kill()
