"""Weights table, cache and the explicit `c6bench weights` commands (file:// URLs, sockets blocked)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import weights
from harness.cli import main
from harness.errors import C6BenchError, MissingWeightsError
from harness.weights import WeightSpec

PAYLOAD = b"not really a network, but bytes all the same\n" * 100


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Weights served from a local file:// URL (right and wrong digest) and one unreachable URL."""
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "cache"))
    source = tmp_path / "upstream" / "tiny.bin"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    table = {
        "tiny": WeightSpec("tiny", "tiny.bin", source.as_uri(), digest, "MIT", adapter="test"),
        "tampered": WeightSpec("tampered", "tampered.bin", source.as_uri(), "0" * 64, "MIT", adapter="test"),
        "offline": WeightSpec("offline", "offline.bin", "https://weights.example.org/offline.bin", None,
                              "MIT", adapter="test"),
    }
    monkeypatch.setattr(weights, "table", lambda: table)
    return {"digest": digest, "table": table}


def test_known_cellpose_weights_are_declared_with_their_upstream_files() -> None:
    table = weights.table()
    assert (table["cyto3"].file, table["cyto3"].url, table["cyto3"].adapter) == (
        "cyto3", "https://www.cellpose.org/models/cyto3", "cellpose")
    assert (table["nuclei"].file, table["nuclei"].url) == (
        "nucleitorch_0", "https://www.cellpose.org/models/nucleitorch_0")


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "w"))
    assert weights.cache_dir() == tmp_path / "w"
    assert weights.path_of("cyto3") == tmp_path / "w" / "cyto3"


def test_fetch_downloads_into_the_cache_and_verifies(served: dict[str, object]) -> None:
    path = weights.fetch("tiny")
    assert path == weights.cache_dir() / "tiny.bin"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name("tiny.bin.part").exists()
    assert weights.resolve("tiny") == path
    # present + not forced: verified, not downloaded again
    path.write_bytes(b"corrupted")
    with pytest.raises(C6BenchError, match="does not match"):
        weights.fetch("tiny")
    assert weights.fetch("tiny", force=True).read_bytes() == PAYLOAD


def test_sha256_mismatch_is_an_error_and_nothing_is_saved(served: dict[str, object]) -> None:
    with pytest.raises(C6BenchError, match=f"has sha256 {served['digest']}, but sha256 0{{64}} is recorded"):
        weights.fetch("tampered")
    assert list(weights.cache_dir().iterdir()) == []


def test_missing_file_error_names_the_fetch_command(served: dict[str, object]) -> None:
    with pytest.raises(MissingWeightsError) as err:
        weights.resolve("tiny")
    assert "`c6bench weights fetch tiny`" in str(err.value)
    assert str(weights.cache_dir() / "tiny.bin") in str(err.value)


def test_missing_cyto3_names_the_exact_command() -> None:
    with pytest.raises(MissingWeightsError, match="run `c6bench weights fetch cyto3`"):
        weights.resolve("cyto3")


def test_unknown_name_and_missing_path_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="unknown weights name 'cyto4'; known: .*cyto3"):
        weights.resolve("cyto4")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        weights.resolve(str(tmp_path / "nowhere" / "model.pt"))


def test_offline_fetch_fails_fast_with_a_clear_message(served: dict[str, object]) -> None:
    start = time.perf_counter()
    with pytest.raises(C6BenchError) as err:
        weights.fetch("offline")
    assert time.perf_counter() - start < 5.0
    message = str(err.value)
    assert "could not download weights offline from https://weights.example.org/offline.bin" in message
    assert "network is unreachable" in message and str(weights.cache_dir() / "offline.bin") in message
    assert not (weights.cache_dir() / "offline.bin.part").exists()


def test_cli_list_path_fetch(served: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"cache dir: {weights.cache_dir()}")
    assert out[1].split()[:4] == ["name", "adapter", "file", "status"]
    assert [line.split()[:4] for line in out[2:]] == [
        ["offline", "test", "offline.bin", "absent"], ["tampered", "test", "tampered.bin", "absent"],
        ["tiny", "test", "tiny.bin", "absent"]]
    assert main(["weights", "path", "tiny"]) == 0
    assert capsys.readouterr().out == f"{weights.cache_dir() / 'tiny.bin'}\n"
    assert main(["weights", "fetch", "tiny"]) == 0
    assert capsys.readouterr().out == f"{weights.cache_dir() / 'tiny.bin'}\n"
    assert main(["weights", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[:4] == ["tiny", "test", "tiny.bin", "present"]
    assert main(["weights", "path", "nope"]) == 2
    assert "unknown weights name 'nope'" in capsys.readouterr().err


def test_cli_fetch_offline_in_a_subprocess(subprocess_env: dict[str, str]) -> None:
    """The real command with sockets blocked: one clean error line, exit status 2, nothing in the cache."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "harness", "weights", "fetch", "cyto3"], capture_output=True,
                         text=True, env=subprocess_env)
    assert out.returncode == 2
    assert "error: could not download weights cyto3 from https://www.cellpose.org/models/cyto3" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.perf_counter() - start < 30.0
    assert not weights.path_of("cyto3").exists()
