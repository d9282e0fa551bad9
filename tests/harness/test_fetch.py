"""`harness.fetch`: download (resumable), zip verification, staged unpack — against zips the tests build."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from harness import fetch
from harness.errors import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "glioma_mini"


def make_zip(path: Path, top: str = "dataset/") -> bytes:
    """A zip of the fixture dataset laid out like Zenodo's dataset.zip."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted((FIXTURE / "dataset").rglob("*")):
            if file.is_file():
                archive.write(file, top + file.relative_to(FIXTURE / "dataset").as_posix())
    return path.read_bytes()


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, status: int, headers: dict[str, str]) -> None:
        super().__init__(body)
        self.status = status
        self.headers = headers


class FakeServer:
    """An opener serving one payload; honours Range unless told not to; may cut the body short."""

    def __init__(self, payload: bytes, ranges: bool = True, cut: int | None = None) -> None:
        self.payload, self.ranges, self.cut, self.requests = payload, ranges, cut, []

    def __call__(self, request: Any, timeout: float) -> FakeResponse:
        self.requests.append(request.get_header("Range"))
        start = 0
        header = request.get_header("Range")
        if header and self.ranges:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            body = self.payload[start:]
            headers = {
                "Content-Length": str(len(body)),
                "Content-Range": f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}",
            }
            status = 206
        else:
            body, headers, status = self.payload, {"Content-Length": str(len(self.payload))}, 200
        return FakeResponse(body[: self.cut] if self.cut is not None else body, status, headers)


def test_fetch_from_file_url_unpacks_and_removes_zip(tmp_path: Path) -> None:
    make_zip(tmp_path / "dataset.zip")
    dest = tmp_path / "glioma_c6"
    root = fetch.fetch_dataset(dest, url=(tmp_path / "dataset.zip").as_uri())
    assert root == dest / "dataset"
    assert (root / "spec" / "train" / "images" / "t1.tif").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["dataset"]  # no .part, no zip, no staging folder


def test_resume_sends_range_and_appends(tmp_path: Path) -> None:
    payload = make_zip(tmp_path / "src.zip")
    dest = tmp_path / "glioma_c6"
    dest.mkdir()
    (dest / "dataset.zip.part").write_bytes(payload[:1000])
    server = FakeServer(payload)
    fetch.fetch_dataset(dest, url="https://example.invalid/dataset.zip", opener=server, keep_zip=True)
    assert server.requests == ["bytes=1000-"]
    assert (dest / "dataset.zip").read_bytes() == payload


def test_server_ignoring_range_restarts(tmp_path: Path) -> None:
    payload = make_zip(tmp_path / "src.zip")
    part = tmp_path / "dataset.zip.part"
    part.write_bytes(b"stale bytes from another file")
    fetch.download("https://example.invalid/x", part, opener=FakeServer(payload, ranges=False))
    assert part.read_bytes() == payload


def test_interrupted_download_keeps_part_then_resumes(tmp_path: Path) -> None:
    payload = make_zip(tmp_path / "src.zip")
    dest = tmp_path / "glioma_c6"
    with pytest.raises(
        DataError, match=r"dataset.zip.part: download stopped at 500 of \d+ bytes; run .* to resume"
    ):
        fetch.fetch_dataset(dest, url="https://example.invalid/d.zip", opener=FakeServer(payload, cut=500))
    assert (dest / "dataset.zip.part").stat().st_size == 500
    server = FakeServer(payload)
    assert fetch.fetch_dataset(dest, url="https://example.invalid/d.zip", opener=server).is_dir()
    assert server.requests == ["bytes=500-"]


def test_corrupt_zip_is_rejected_and_deleted(tmp_path: Path) -> None:
    payload = bytearray(make_zip(tmp_path / "src.zip"))
    payload[200:210] = b"\x00" * 10  # inside the first member's compressed data
    dest = tmp_path / "glioma_c6"
    with pytest.raises(DataError, match="(fails its CRC check|not a complete zip archive).*deleted"):
        fetch.fetch_dataset(dest, url="https://example.invalid/d.zip", opener=FakeServer(bytes(payload)))
    assert not (dest / "dataset.zip.part").exists() and not (dest / "dataset").exists()


def test_truncated_zip_file(tmp_path: Path) -> None:
    payload = make_zip(tmp_path / "src.zip")
    (tmp_path / "cut.zip").write_bytes(payload[:-30])
    with pytest.raises(DataError, match="cut.zip: not a complete zip archive"):
        fetch.verify_zip(tmp_path / "cut.zip")


def test_zip_without_layout_and_unsafe_members(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match="no spec/ folder .* found readme.txt"):
        fetch.fetch_dataset(tmp_path / "d1", zip_path=tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../evil.txt", "x")
    with pytest.raises(DataError, match="would unpack outside"):
        fetch.fetch_dataset(tmp_path / "d2", zip_path=tmp_path / "evil.zip")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_without_top_folder_and_given_zip_is_kept(tmp_path: Path) -> None:
    make_zip(tmp_path / "flat.zip", top="")
    root = fetch.fetch_dataset(tmp_path / "g", zip_path=tmp_path / "flat.zip")
    assert (root / "gen" / "gen.json").is_file() and (tmp_path / "flat.zip").is_file()


def test_offline_fails_fast_with_clear_message(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(
        DataError,
        match=r"could not download https://zenodo.org/records/15083188/files/dataset.zip"
        r"\?download=1 .*network is unreachable.*c6bench data fetch --zip PATH",
    ):
        fetch.fetch_dataset(tmp_path / "g")  # sockets are blocked in tests: the real opener fails at once
    assert time.monotonic() - start < 5
    assert not (tmp_path / "g").exists()  # no empty data/glioma_c6 left for `--data auto` to trip over
    assert fetch.DATASET_URL == "https://zenodo.org/records/15083188/files/dataset.zip?download=1"
