"""Weights integrity (published hashes checked at fetch, recorded at run time) and the one resumable downloader."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.request
from pathlib import Path

import pytest
from test_fetch import FakeServer  # the fake Range server of the dataset download tests (same folder)

from harness import digest, integrity, weights
from harness.errors import C6BenchError
from harness.integrity import Published
from harness.weights import WeightSpec

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
MD5, SHA = hashlib.md5(PAYLOAD).hexdigest(), hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, WeightSpec]:
    """Specs served from file:// (or the fake Range server): names carrying right and wrong hash prefixes."""
    monkeypatch.setenv("C6BENCH_WEIGHTS", str(tmp_path / "cache"))
    source = tmp_path / "upstream.bin"
    source.write_bytes(PAYLOAD)
    url = source.as_uri()
    specs = {
        "sam_good": WeightSpec("sam_good", f"sam/sam_vit_b_{MD5[:6]}.pth", url, None, "Apache-2.0"),
        "sam_bad": WeightSpec("sam_bad", "sam/sam_vit_b_01ec64.pth", url, None, "Apache-2.0"),
        "hub_good": WeightSpec("hub_good", f"resnet-{SHA[:8]}.pth", url, None, "BSD"),
        "hub_bad": WeightSpec("hub_bad", "resnet50-0676ba61.pth", url, None, "BSD"),
        "md5_bad": WeightSpec("md5_bad", "m/model.pth", url, None, "MIT", md5="e0ccb052828a9f05e21b2143939583c5"),
        "plain": WeightSpec("plain", "plain.bin", "https://weights.example.org/plain.bin", None, "MIT"),
    }
    monkeypatch.setattr(weights, "table", lambda: {**specs})
    return specs


def test_published_hashes_of_the_known_releases() -> None:
    """SAM names carry an md5 prefix (not sha256), MEDIAR's md5s are recorded, cellpose/YOLO publish none."""
    known = weights.table()
    assert integrity.published(known["sam_vit_b"]) == [Published("md5", "01ec64", "file name")]
    assert integrity.published(known["sam_vit_h"]) == [Published("md5", "4b8939", "file name")]
    assert integrity.published(known["from_phase1"]) == [
        Published("md5", "e0ccb052828a9f05e21b2143939583c5", "recorded")]
    assert integrity.published(known["from_phase2"]) == [
        Published("md5", "a595336926767afdf1ffb1baffd5ab7f", "recorded")]
    assert integrity.published(known["cyto3"]) == integrity.published(known["yolo11l-seg"]) == []
    hub = WeightSpec("r", "resnet50-0676ba61.pth", "", None, "")
    assert integrity.published(hub) == [Published("sha256", "0676ba61", "file name")]
    for plain in ("model-final.pth", "yolo11l-seg.pt", "mediar/from_phase1.pth", "sam_vit_b.pth"):
        assert integrity.published(WeightSpec("x", plain, "", None, "")) == [], plain


def test_a_torchvision_sha256_prefix_is_accepted_in_a_spec_and_in_a_file_name(tmp_path: Path) -> None:
    """torchvision publishes 8 hex digits of the sha256 (in its file names): recorded or in the name, both check."""
    path = tmp_path / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    path.write_bytes(PAYLOAD)
    recorded = WeightSpec("tv", "tv.pth", "https://download.pytorch.org/models/tv.pth", SHA[:8], "BSD-3-Clause")
    assert integrity.published(recorded) == [Published("sha256", SHA[:8], "recorded")]
    good = integrity.check_file(path, recorded, "tv")
    assert (good.verified, good.against) == ("yes", f"sha256 prefix {SHA[:8]} is recorded")
    named = WeightSpec("tv", path.name, "https://download.pytorch.org/models/" + path.name, None, "BSD-3-Clause")
    bad = integrity.check_file(path, named, "tv")
    assert bad.verified == "mismatch" and bad.against == (
        f"sha256 {SHA}, but sha256 prefix bf2d0c1e is published in its file name")
    for wrong in ("BF2D0C1E", "bf2d0c1", "bf2d0c1g"):
        with pytest.raises(ValueError, match=f"WeightSpec 'tv': sha256 must be 8 to 64 lowercase hex digits .* got '{wrong}'"):
            WeightSpec("tv", "tv.pth", "https://x.org/tv.pth", wrong, "BSD-3-Clause")


@pytest.mark.parametrize(("name", "problem"), [
    ("sam_bad", f"has md5 {MD5}, but md5 prefix 01ec64 is published in its file name"),
    ("hub_bad", f"has sha256 {SHA}, but sha256 prefix 0676ba61 is published in its file name"),
    ("md5_bad", f"has md5 {MD5}, but md5 e0ccb052828a9f05e21b2143939583c5 is recorded"),
])
def test_fetch_refuses_a_download_that_does_not_match_its_published_hash(table, name: str, problem: str) -> None:
    with pytest.raises(C6BenchError) as err:
        weights.fetch(name)
    assert problem in str(err.value) and "it was not saved" in str(err.value)
    cache = weights.cache_dir()
    assert not cache.exists() or [p for p in cache.rglob("*") if p.is_file()] == []  # no file, no .part


def test_fetch_accepts_matching_name_prefixes_and_verifies_them_again(table) -> None:
    for name in ("sam_good", "hub_good"):
        path = weights.fetch(name)
        assert path.read_bytes() == PAYLOAD and weights.check(name).verified == "yes"
    bad = weights.path_of("sam_bad")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(PAYLOAD)  # copied by hand under the release's name
    with pytest.raises(C6BenchError, match=r"sam_vit_b_01ec64.pth: has md5 .* for weights sam_bad: it does not "
                                           r"match; delete the file and run `c6bench weights fetch sam_bad --force`"):
        weights.fetch("sam_bad")


def test_interrupted_weights_download_resumes_with_range(table, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights use the dataset's resumable downloader: a cut transfer keeps its bytes, the rerun asks for the rest."""
    table["plain"] = WeightSpec("plain", "big/sam_vit_h_" + MD5[:6] + ".pth", "https://example.invalid/w.pth",
                                None, "Apache-2.0")
    cut = FakeServer(PAYLOAD, cut=4000)
    monkeypatch.setattr(urllib.request, "urlopen", cut)
    with pytest.raises(C6BenchError, match=r"\.pth\.part: download stopped at 4000 of 10240 bytes; run "
                                           r"`c6bench weights fetch plain` again to resume"):
        weights.fetch("plain")
    target = weights.path_of("plain")
    assert not target.exists() and target.with_name(target.name + ".part").stat().st_size == 4000
    rest = FakeServer(PAYLOAD)
    monkeypatch.setattr(urllib.request, "urlopen", rest)
    assert weights.fetch("plain").read_bytes() == PAYLOAD
    assert (cut.requests, rest.requests) == ([None], ["bytes=4000-"])
    assert not target.with_name(target.name + ".part").exists()


def test_run_time_check_records_the_sha256_and_warns_loudly_once(table, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    plain = weights.path_of("plain")
    plain.parent.mkdir(parents=True, exist_ok=True)
    plain.write_bytes(PAYLOAD)
    assert weights.check("plain") == integrity.WeightsCheck("plain", plain, SHA, "no", "no hash published")
    copied = weights.path_of("sam_bad")
    copied.parent.mkdir(parents=True, exist_ok=True)
    copied.write_bytes(PAYLOAD)
    with caplog.at_level(logging.WARNING, logger="harness.integrity"):
        first, again = weights.check("sam_bad"), weights.check("sam_bad")
    assert first == again and (first.verified, first.sha256) == ("mismatch", SHA)
    assert first.note() == " (md5 mismatch: not the released file)"
    assert first.to_dict() == {"name": "sam_bad", "path": str(copied), "sha256": SHA, "verified": "mismatch",
                               "against": f"md5 {MD5}, but md5 prefix 01ec64 is published in its file name"}
    assert [r.message.split(":")[0] for r in caplog.records] == [
        f"WEIGHTS sam_bad ({copied}) ARE NOT THE RELEASED FILE"]
    # a local file named like a release is held to that release's hashes
    elsewhere = tmp_path / "downloads" / "sam_vit_b_01ec64.pth"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(PAYLOAD)
    assert weights.check(str(elsewhere)).verified == "mismatch"
    assert weights.check(str(plain)).verified == "no"


def test_md5_and_sha256_digests_are_cached_and_computed_in_one_read(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    os.utime(path, (time.time() - 3600, time.time() - 3600))  # a file modified seconds ago is never remembered
    reads: list[tuple[str, ...]] = []
    real = digest.hash_file
    monkeypatch.setattr(digest, "hash_file", lambda p, algorithms=digest.ALGORITHMS: reads.append(
        tuple(algorithms)) or real(p, algorithms))
    assert (digest.file_digest(path, "md5"), digest.file_digest(path)) == (MD5, SHA)
    assert reads == [("sha256", "md5")]
    with pytest.raises(ValueError, match="'sha1' is not one of sha256, md5"):
        digest.file_digest(path, "sha1")
