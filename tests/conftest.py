"""Test-wide guarantees: no network, no writes to the user's caches, headless plotting, CPU only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
NONET = Path(__file__).resolve().parent / "_nonet"

# Block sockets for this process (subprocesses get the same through `subprocess_env`).
sys.path.insert(0, str(NONET))
import sitecustomize  # noqa: E402,F401  (installs the socket guard)

sys.path.remove(str(NONET))

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["YOLO_OFFLINE"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache a model library might write to at a temporary folder."""
    root = tmp_path_factory.getbasetemp() / "caches"
    for var, sub in (("C6BENCH_WEIGHTS", "weights"), ("CELLPOSE_LOCAL_MODELS_PATH", "cellpose"),
                     ("YOLO_CONFIG_DIR", "yolo"), ("TORCH_HOME", "torch"), ("HF_HOME", "hf"),
                     ("MPLCONFIGDIR", "mpl")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(root / sub))
    return root


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for `c6bench` subprocesses: same caches, sockets blocked via sitecustomize."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(NONET), str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled real sample (Usiigaci phase contrast)."""
    return SAMPLE
