"""Test-wide guarantees: no network, no writes to the user's caches, headless plotting, CPU only.

Tests marked ``@pytest.mark.env("<model>")`` need that model's own environment (`harness.envs`, e.g. cellpose
4 for cellpose_sam): outside it they run, all together, in one child pytest under the environment, and each
one reports the child's outcome here (passed, failed with the child's traceback, skipped with its reason).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
NONET = Path(__file__).resolve().parent / "_nonet"

# Block sockets for this process (subprocesses get the same through `subprocess_env`).
sys.path.insert(0, str(NONET))
import sitecustomize  # noqa: E402,F401  (installs the socket guard)

sys.path.remove(str(NONET))
# ... and for every child process, including the ones the harness starts itself (model environments, workers).
os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys([str(NONET), str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))

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


# ------------------------------------------------------------------------------------------- env-marked tests


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "env(model): runs under that model's own environment (harness.envs)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Env-marked tests outside their environment: no setup here, their outcome comes from the child run."""
    from harness import envs

    for item in items:
        mark = item.get_closest_marker("env")
        if mark is None:
            continue
        env = envs.for_model(mark.args[0])
        if env is None or env.active:
            continue
        item.setup = lambda: None  # fixtures are set up in the child
        item.runtest = functools.partial(_outcome_from_child, item, env)


_CHILD_RESULTS: dict[str, dict[tuple[str, str], tuple[str, str]]] = {}


def _junit_key(nodeid: str) -> tuple[str, str]:
    path, *names = nodeid.split("::")
    return ".".join([path.removesuffix(".py").replace("/", "."), *names[:-1]]), names[-1]


def _outcome_from_child(item: pytest.Item, env) -> None:  # noqa: ANN001 - harness.envs.Environment
    if not env.ready:
        pytest.skip(f"environment of {env.model} not prepared: run `c6bench env prepare {env.model}`")
    if env.model not in _CHILD_RESULTS:
        ids = [i.nodeid for i in item.session.items
               if (m := i.get_closest_marker("env")) is not None and m.args[0] == env.model]
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "junit.xml"
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "",
                   f"--junitxml={xml}", *ids]
            out = subprocess.run(cmd, cwd=item.config.rootpath, env=env.child_environ(), capture_output=True,
                                 text=True)
            results = {}
            if xml.is_file():
                for case in ET.parse(xml).getroot().iter("testcase"):
                    bad = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
                    text = "" if bad is None else f"{bad.get('message', '')}\n{bad.text or ''}"
                    key = (case.get("classname", ""), case.get("name", ""))
                    results[key] = (bad.tag if bad is not None else "passed", text)
        _CHILD_RESULTS[env.model] = results
        _CHILD_RESULTS[env.model][("", "")] = ("output", (out.stdout + out.stderr)[-3000:])
    results = _CHILD_RESULTS[env.model]
    outcome, message = results.get(_junit_key(item.nodeid), ("error", "the child run did not report it"))
    where = f"[ran under {env.path.name}] "
    if outcome == "skipped":
        pytest.skip(where + message.split("\n")[0])
    if outcome != "passed":
        tail = "\n" + results[("", "")][1] if outcome == "error" else ""  # the child's output if it crashed
        pytest.fail(where + message + tail, pytrace=False)
