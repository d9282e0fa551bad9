"""Per-model environments (harness.envs): prepared once, offline-safe, layered for the model's processes only.

Preparing is tested with a wheel built here (pip installs a local file without any index: sockets stay
blocked); the shipped cellpose_sam environment (prepared by `make setup`) carries the end-to-end bench of
cellpose 3 and cellpose 4 side by side, where each process's imported cellpose is read back from the manifest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from adapters.cellpose_sam import CellposeSAMAdapter
from harness import envs

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel with one module ``<name>`` and the given Requires-Dist lines."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                                     *(f"Requires-Dist: {r}\n" for r in requires)]),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(t.encode())}" for p, t in files.items()] + [f"{info}/RECORD,,"]
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, t in {**files, f"{info}/RECORD": "\n".join(record) + "\n"}.items():
            zf.writestr(p, t)
    return path


@pytest.fixture
def envs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(envs.ROOT_ENV, str(tmp_path / "envs"))
    return tmp_path / "envs"


def test_prepare_installs_exactly_the_declared_wheel_once(envs_root: Path, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "c6demo", "1.0", ("numpy>=1.20", "tqdm; python_version < '3'", "pytest; extra == 'x'"))
    env = envs.Environment("demo", (f"c6demo @ {wheel.as_uri()}",))
    assert not env.ready and env.path == envs_root / f"demo-{env.key}"
    record = envs.prepare(env, pip_args=["--no-index"])
    assert env.ready and record["packages"] == {"c6demo": "1.0"} and record["shadows"] == {}
    assert record["requirements"] == [f"c6demo @ {wheel.as_uri()}"] and record["bytes"] > 0
    assert sorted(p.name for p in envs_root.iterdir()) == [env.path.name]  # no temporary folder left
    assert json.loads((env.path / "env.json").read_text()) == record
    code = "import c6demo, sys; print(c6demo.__file__); print('numpy' in sys.modules or __import__('numpy').__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=env.child_environ(), capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == str(env.path / "c6demo" / "__init__.py") and "site-packages" in out[1]  # numpy: the project's
    with pytest.raises(ImportError):
        __import__("c6demo")  # this process is not layered
    wheel.unlink()  # a second prepare installs nothing
    assert envs.prepare(env, pip_args=["--no-index"]) == record


def test_unmet_or_conflicting_dependency_is_an_error_naming_it(envs_root: Path, tmp_path: Path) -> None:
    for requires, message in (
        (("c6absent>=1",), r"c6demo needs c6absent>=1, which is not installed"),
        (("numpy<2",), r"c6demo needs numpy<2, but numpy 2\.0\.2 is installed"),
    ):
        wheel = make_wheel(tmp_path, "c6demo", "1.0", requires)
        env = envs.Environment("demo", (f"c6demo @ {wheel.as_uri()}",))
        with pytest.raises(envs.PrepareError, match=rf"model demo: its environment would not work — {message}\. "
                                                    r"Add the missing distribution, pinned"):
            envs.prepare(env, pip_args=["--no-index"])
        assert not env.ready and list(envs_root.iterdir()) == []
        wheel.unlink()


def test_the_projects_binary_core_cannot_be_replaced(envs_root: Path) -> None:
    env = envs.Environment("demo", ("torch==2.0.0", "cellpose==4.2.1.1"))
    with pytest.raises(envs.PrepareError, match=r"model demo: requirements must not replace the project's torch"):
        envs.prepare(env)


def test_a_changed_requirement_is_a_new_environment_and_the_old_one_goes(envs_root: Path, tmp_path: Path) -> None:
    old = envs.Environment("demo", (f"c6demo @ {make_wheel(tmp_path, 'c6demo', '1.0').as_uri()}",))
    envs.prepare(old, pip_args=["--no-index"])
    new = envs.Environment("demo", (f"c6demo @ {make_wheel(tmp_path, 'c6demo', '2.0').as_uri()}",))
    assert new.key != old.key
    assert envs.prepare(new, pip_args=["--no-index"])["packages"] == {"c6demo": "2.0"}
    assert sorted(p.name for p in envs_root.iterdir()) == [new.path.name]


def test_models_without_requirements_have_no_environment() -> None:
    import adapters

    assert [n for n in adapters.names() if envs.for_model(n)] == ["cellpose_sam"]
    assert envs.key_fields(adapters.get("cellpose"), type("S", (), {"kind": "train"})) == {}


def test_a_missing_environment_stops_the_bench_naming_the_command(envs_root: Path, subprocess_env: dict) -> None:
    out = subprocess.run([sys.executable, "-m", "harness", "bench", "--model", "cellpose_sam", "--data", "sample",
                          "--out", str(envs_root.parent / "run")], capture_output=True, text=True,
                         env={**subprocess_env, envs.ROOT_ENV: str(envs_root)})
    env = envs.of(CellposeSAMAdapter)
    assert out.returncode == 2 and out.stderr.splitlines()[-1] == (
        "error: model cellpose_sam runs in its own environment (cellpose==4.2.1.1), which is not prepared at "
        f"{env.path}; prepare it once with `c6bench env prepare cellpose_sam` (needs the package registry; "
        "`make setup` does it)")
    assert not (envs_root.parent / "run" / "plan.json").exists()  # nothing planned, nothing ran


def test_env_list_and_prepare_name_what_they_do(subprocess_env: dict) -> None:
    env = envs.of(CellposeSAMAdapter)
    if not env.ready:
        pytest.skip("cellpose_sam environment not prepared: run `c6bench env prepare cellpose_sam`")
    listing = subprocess.run([sys.executable, "-m", "harness", "env", "list"], capture_output=True, text=True,
                             env=subprocess_env, check=True).stdout.splitlines()
    row = next(line for line in listing if line.startswith("cellpose_sam "))
    size = env.record()["bytes"] / 1e6
    assert row.split() == ["cellpose_sam", "cellpose==4.2.1.1", "yes", f"{size:.1f}", "MB", str(env.path)]
    assert next(line for line in listing if line.startswith("cellpose ")).split()[1:] == ["-", "-", "-",
                                                                                         "(project", "environment)"]
    again = subprocess.run([sys.executable, "-m", "harness", "env", "prepare"], capture_output=True, text=True,
                           env=subprocess_env, check=True).stdout  # ready: no registry needed (sockets blocked)
    assert again == f"cellpose_sam: ready, {size:.1f} MB, cellpose 4.2.1.1 → {env.path}\n"
    bad = subprocess.run([sys.executable, "-m", "harness", "env", "prepare", "cellpose"], capture_output=True,
                         text=True, env=subprocess_env)
    assert bad.returncode == 2 and "cellpose declare no requirements" in bad.stderr


def test_imported_versions_are_read_where_the_module_came_from() -> None:
    import cellpose

    site = Path(cellpose.__file__).parents[1]
    assert envs.imported_versions(["cellpose", "no-such-dist"]) == {"cellpose": f"3.1.1.3 ({site})"}


def small_replica(out: Path) -> Path:
    """A synthetic Glioma C6 layout of 512-px images, one per split, six cells each (benchmarks/replica.py)."""
    from benchmarks import replica

    split = replica.SplitSpec
    spec = replica.ReplicaSpec(height=512, width=512, somata=8, splits=(
        split("spec/train", "spec/train", 1, 6), split("spec/valid", "spec/valid", 1, 6),
        split("spec/test", "spec/test", 1, 6), split("gen/test", "gen", 1, 6, part="gen")))
    replica.generate(out, spec, seed=1)
    return out


BOTH = ("--config", f"cellpose={FIXTURES / 'cellpose_tiny.yaml'}", "--config",
        f"cellpose_sam={FIXTURES / 'cellpose_sam_tiny.yaml'}", "--targets", "cells", "--threads", "1",
        "--bootstrap", "0")


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, dict[str, str]]:
    """``c6bench bench --model cellpose,cellpose_sam`` into one run root: (root, data, stdout, environ)."""
    if not envs.of(CellposeSAMAdapter).ready:
        pytest.skip("cellpose_sam environment not prepared: run `c6bench env prepare cellpose_sam`")
    tmp = tmp_path_factory.mktemp("both")
    environ = dict(os.environ)  # conftest put the socket guard on PYTHONPATH; caches of this module only:
    for var in ("C6BENCH_WEIGHTS", "CELLPOSE_LOCAL_MODELS_PATH", "TORCH_HOME", "MPLCONFIGDIR"):
        environ[var] = str(tmp / "caches" / var)
    data = small_replica(tmp / "data")
    cmd = [sys.executable, "-m", "harness", "bench", "--model", "cellpose,cellpose_sam", "--data", str(data), *BOTH,
           "--out", str(tmp / "run")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=environ)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stderr.count("child process under environment cellpose_sam-") == 3  # train + 2 predicts
    return tmp / "run", data, out.stdout, environ


def test_cellpose_3_and_4_in_one_bench_each_process_imports_its_own(both: tuple) -> None:
    root, _, stdout, _ = both
    env = envs.of(CellposeSAMAdapter)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["cellpose", "cellpose_sam"]
    site = Path(__import__("cellpose").__file__).parents[1]
    expected = {"cellpose": f"3.1.1.3 ({site})", "cellpose_sam": f"4.2.1.1 ({env.path})"}
    for model in ("cellpose", "cellpose_sam"):
        manifest = json.loads((root / model / "manifest.json").read_text())
        model_stages = {s for s in manifest["wall_seconds"] if s.startswith(("train/", "predict/"))}
        assert model_stages == {"train/cells", "predict/finetuned/cells/spec_test", "predict/finetuned/cells/gen_test"}
        assert set(manifest["imported"]) == model_stages  # evaluate/results import no model library
        assert {manifest["imported"][s]["cellpose"] for s in model_stages} == {expected[model]}
        assert {manifest["imported"][s]["torch"] for s in model_stages} == {f"2.14.1 ({site})"}  # one torch
        assert manifest["versions"]["cellpose"] == expected[model].split()[0]
        pids = {json.loads(p.read_text())["pid"] for p in (root / model / "stages").glob("*.stage.json")}
        assert len(pids) == {"cellpose": 1, "cellpose_sam": 4}[model]  # bench process; + 3 children under the env
        rows = json.loads((root / model / "results.json").read_text())["rows"]
        weights = {"cellpose": "cyto3", "cellpose_sam": "cpsam"}[model]
        assert [(r["mode"], r["subset"], r["status"], r["init"]) for r in rows] == [
            ("zero_shot", "spec/test", "skipped", f"pretrained:{weights}"),
            ("zero_shot", "gen/test", "skipped", f"pretrained:{weights}"),
            ("finetuned", "spec/test", "ok", f"scratch ({weights} not found)"),
            ("finetuned", "gen/test", "ok", f"scratch ({weights} not found)")]
        assert f"run `c6bench weights fetch {weights}`" in rows[0]["reason"]
    sam = json.loads((root / "cellpose_sam" / "manifest.json").read_text())
    assert sam["environment"]["packages"] == {"cellpose": "4.2.1.1"} and sam["environment"]["path"] == str(env.path)
    assert json.loads((root / "cellpose" / "manifest.json").read_text())["environment"] is None
    assert "| cellpose_sam | finetuned | cells | spec/test | scratch (cpsam not found) |" in stdout
    assert "| cellpose | finetuned | cells | spec/test | scratch (cyto3 not found) |" in stdout


def test_the_same_bench_again_reuses_every_stage(both: tuple) -> None:
    """Keys computed by the bench process and by the model's child under its environment agree."""
    root, data, _, environ = both
    cmd = [sys.executable, "-m", "harness", "bench", "--model", "cellpose,cellpose_sam", "--data", str(data), *BOTH,
           "--out", str(root)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=environ)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"nothing to do: every stage of {root} is done" in out.stderr
    assert "child process under environment" not in out.stderr


def test_one_report_over_both_models(both: tuple, tmp_path: Path) -> None:
    root, _, _, environ = both
    out = subprocess.run([sys.executable, "-m", "harness", "report", str(root), "--out", str(tmp_path / "rep"),
                          "--no-figures", "--bootstrap", "0"], capture_output=True, text=True, env=environ)
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "rep" / "table2.md").read_text()
    rows = [[c.strip() for c in line.split("|")[1:7]] for line in table.splitlines() if line.startswith("| cellpose")]
    assert sorted(rows) == [[model, "finetuned", f"scratch ({w} not found)", "quick", "cells", subset]
                            for model, w in (("cellpose", "cyto3"), ("cellpose_sam", "cpsam"))
                            for subset in ("gen/test", "spec/test")]


def test_workers_run_the_env_model_under_its_environment_with_identical_results(both: tuple, tmp_path: Path) -> None:
    root, data, _, environ = both
    cmd = [sys.executable, "-m", "harness", "bench", "--model", "cellpose_sam", "--data", str(data), *BOTH[2:],
           "--workers", "2", "--out", str(tmp_path / "workers")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=environ)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "workers" / "manifest.json").read_text())
    assert {v["cellpose"] for v in manifest["imported"].values()} == {f"4.2.1.1 ({envs.of(CellposeSAMAdapter).path})"}
    for name in ("results.json", "results.csv", "per_image.csv"):
        assert (tmp_path / "workers" / name).read_bytes() == (root / "cellpose_sam" / name).read_bytes(), name


def test_a_stage_failing_under_the_environment_reports_its_own_error(both: tuple, tmp_path: Path) -> None:
    _, data, _, environ = both
    config = tmp_path / "too_many_masks.yaml"
    config.write_text((FIXTURES / "cellpose_sam_tiny.yaml").read_text().replace("min_train_masks: 1",
                                                                                 "min_train_masks: 99"))
    cmd = [sys.executable, "-m", "harness", "bench", "--model", "cellpose_sam", "--data", str(data), "--config",
           str(config), "--targets", "cells", "--modes", "finetuned", "--out", str(tmp_path / "run")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=environ)
    env = envs.of(CellposeSAMAdapter)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        f"error: stage cellpose_sam/train/cells failed in its environment {env.path.name}: DataError: cellpose_sam "
        "train: no image has at least 99 instance(s) of this target (1 image(s) given); lower min_train_masks or "
        f"check the target's categories (log: {tmp_path / 'run' / 'logs' / 'train__cells.log'})")
