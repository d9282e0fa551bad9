"""`c6bench data fetch`: download the Glioma C6 archive (Zenodo record 15083188), verify, unpack, validate.

This is one of the only two code paths allowed to reach the network (the other is `c6bench weights fetch`).
The download is resumable (`harness.download`, shared with the weights): bytes go to
``<dest>/dataset.zip.part`` and a rerun asks the server for the rest with an HTTP ``Range`` header (a server
that ignores it sends the whole file again, which restarts the part file). The finished zip is checked with
`zipfile.ZipFile.testzip` (every member's CRC) before it is unpacked into a temporary folder and renamed to
``<dest>/dataset``, so `harness.dataset.resolve_data("auto")` never sees a half-unpacked dataset.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
import zlib
from pathlib import Path

from harness.download import TIMEOUT_S, Opener
from harness.download import download as _download
from harness.errors import DataError

logger = logging.getLogger(__name__)

ZENODO_RECORD = 15083188
DATASET_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/dataset.zip?download=1"
OFFLINE_HINT = "on an offline machine, download dataset.zip elsewhere and run `c6bench data fetch --zip PATH`"


def download(url: str, part: Path, timeout: float = TIMEOUT_S, opener: Opener | None = None) -> Path:
    """`harness.download.download` with the dataset's messages (the one resumable downloader)."""
    return _download(url, part, timeout=timeout, opener=opener, offline_hint=OFFLINE_HINT,
                     rerun="run `c6bench data fetch` again")


def verify_zip(path: Path) -> int:
    """Check that ``path`` is a complete zip whose members all pass their CRC; returns the member count."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            count = len(archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a complete zip archive ({exc}); delete it and fetch again") from exc
    if bad is not None:
        raise DataError(
            f"{path}: member {bad!r} fails its CRC check (corrupt download); delete it and fetch again"
        )
    if count == 0:
        raise DataError(f"{path}: the zip archive is empty")
    return count


def unpack(zip_path: Path, dest: Path) -> Path:
    """Unpack the archive into ``dest/dataset`` (via a temporary folder, renamed at the end); returns it."""
    from tqdm import tqdm

    target = dest / "dataset"
    staging = dest / ".unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        for member in tqdm(archive.infolist(), desc="unpack", unit="file"):
            out = (staging / member.filename).resolve()
            if not out.is_relative_to(staging.resolve()):
                raise DataError(
                    f"{zip_path}: member {member.filename!r} would unpack outside {staging}; refused"
                )
            archive.extract(member, staging)
    # The archive holds a top-level `dataset/` folder; accept one without it too.
    inner = staging / "dataset"
    source = inner if (inner / "spec").is_dir() else staging
    if not (source / "spec").is_dir():
        found = ", ".join(sorted(p.name for p in staging.iterdir())) or "nothing"
        raise DataError(f"{zip_path}: no spec/ folder (the Glioma C6 layout) in the archive; found {found}")
    if target.exists():
        shutil.rmtree(target)
    source.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_dataset(
    dest: Path,
    url: str = DATASET_URL,
    zip_path: Path | None = None,
    keep_zip: bool = False,
    timeout: float = TIMEOUT_S,
    opener: Opener | None = None,
) -> Path:
    """Download (or take ``zip_path``), verify and unpack Glioma C6 into ``dest/dataset``; returns it."""
    dest = Path(dest)
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch_into(dest, url, zip_path, keep_zip, timeout, opener)
    except DataError:
        if created and not any(dest.iterdir()):
            dest.rmdir()  # no empty data/glioma_c6 left: `--data auto` would take it for a broken download
        raise


def _fetch_into(
    dest: Path, url: str, zip_path: Path | None, keep_zip: bool, timeout: float, opener: Opener | None
) -> Path:
    if zip_path is None:
        final = dest / "dataset.zip"
        if not final.is_file():
            part = dest / "dataset.zip.part"
            logger.info("downloading Glioma C6 (Zenodo record %d) from %s", ZENODO_RECORD, url)
            download(url, part, timeout=timeout, opener=opener)
            try:
                verify_zip(part)
            except DataError as exc:
                part.unlink()  # a full-size but corrupt file cannot be resumed
                raise DataError(f"{exc} (the corrupt download was deleted; run the fetch again)") from exc
            part.replace(final)
        zip_path = final
    members = verify_zip(zip_path)
    logger.info("%s: complete zip with %d members", zip_path, members)
    root = unpack(zip_path, dest)
    if not keep_zip and zip_path.parent.resolve() == dest.resolve():
        zip_path.unlink()
    logger.info("Glioma C6 unpacked to %s", root)
    return root
