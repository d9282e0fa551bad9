"""Files: every file the harness writes appears whole or not at all; text and YAML are read one strict way.

One mechanism for all writers (JSON, text, bytes, and anything a library saves itself, such as
``torch.save`` or ``tifffile.imwrite``): write to a temporary name that is unique to this process and call
(``.<name>.<pid>.<random>.tmp`` in the same folder), then ``os.replace`` it onto the final name. A fixed temporary
name would be shared by concurrent writers and lose races; a killed writer leaves at most a hidden ``.tmp``.

Reading: `read_text` drops a UTF-8 byte-order mark, `read_yaml` refuses a key given twice. Faults: `ensure_dir`
checks an output folder before any work, `describe_os_error` turns an ``OSError`` into one line naming the
path and the cause.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def temp_path(path: Path) -> Path:
    """A temporary sibling of `path` no other process or call will use."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces `path`, on any error it is removed.

    For writers that take a file name (``torch.save(obj, str(tmp))``, ``tifffile.imwrite(tmp, ...)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, payload: Any, indent: int | None = None) -> Path:
    """Write `payload` as JSON atomically (compact unless `indent` is given); returns the path."""
    return write_text(path, json.dumps(payload, indent=indent))


# --------------------------------------------------------------------------------------------- reading


def read_text(path: Path | str) -> str:
    """UTF-8 text of a file, a leading byte-order mark dropped (many Windows tools write one)."""
    return Path(path).read_bytes().decode("utf-8-sig")


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file, refusing a mapping key given twice (PyYAML would keep the last one silently).

    Errors are `harness.errors.ConfigError` naming the file (and the key and both lines for a duplicate).
    """
    import yaml

    from harness.errors import ConfigError

    path = Path(path)
    try:
        text = read_text(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc


class _DuplicateKey(ValueError):
    """A YAML mapping holds the same key twice."""


_LOADER: Any = None


def _strict_loader() -> Any:
    """A `yaml.SafeLoader` whose mappings refuse duplicate keys (built once, on first use)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class StrictLoader(yaml.SafeLoader):
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        first = seen.get(key)
                    except TypeError:  # an unhashable key: PyYAML reports it itself
                        continue
                    if first is not None:
                        where = f"line {line}" if first == line else f"lines {first} and {line}"
                        raise _DuplicateKey(f"key {key!r} is given twice ({where}); YAML would keep only the "
                                            "last one — remove one of them")
                    seen[key] = line
                return super().construct_mapping(node, deep=deep)

        _LOADER = StrictLoader
    return _LOADER


# --------------------------------------------------------------------------------------------- faults


def final_name(path: Path | str) -> Path:
    """The file a temporary name of `temp_path` stands for (``.a.json.123.ab12cd34.tmp`` → ``a.json``)."""
    path = Path(path)
    parts = path.name.split(".")
    if path.name.startswith(".") and path.name.endswith(".tmp") and len(parts) >= 5:
        return path.with_name(".".join(parts[1:-3]))
    return path


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: the path (not a temporary name), the cause and what to do."""
    import errno

    paths = [str(final_name(p)) for p in (exc.filename, exc.filename2) if p is not None]
    cause = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "the disk is full; free some space (or write elsewhere) and run the same command again",
            errno.EDQUOT: "the disk quota is used up; free some space and run the same command again",
            errno.EACCES: "no permission; choose a folder you can write to",
            errno.EPERM: "no permission; choose a folder you can write to",
            errno.EROFS: "the file system is read-only; choose another folder",
            errno.ENOTDIR: "a part of this path is a file, not a folder",
            errno.EEXIST: "a file is in the way of a folder of that name",
            errno.EISDIR: "this is a folder, not a file"}.get(exc.errno or -1, "")
    return f"{' -> '.join(paths) or 'file operation'}: {cause}" + (f" ({hint})" if hint else "")


def ensure_dir(path: Path | str, what: str = "--out") -> Path:
    """Create an output folder (and its parents) and check that a file can be written in it, before any work.

    Raises `harness.errors.ConfigError` naming the folder and the cause (a file in the way, no permission,
    read-only or full disk) so a long run does not fail at its last step.
    """
    from harness.errors import ConfigError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path}: is a file, not a folder; choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temp_path(path / "write-probe")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError(f"{what} {path}: {blocking} is a file, so no folder can be made below it") from exc
        raise ConfigError(f"{what} {path}: cannot write there ({describe_os_error(exc)})") from exc
    return path


def write_json_or_overwrite(path: Path | str, payload: Any) -> None:
    """`write_json`, falling back to rewriting an existing small file over its own blocks (no new file, no new
    inode) when the atomic write fails: a full disk cannot make the temporary file, but a stage record written
    when the stage started already has its block, so its failure can still be recorded."""
    try:
        write_json(path, payload)
    except OSError as exc:
        if not Path(path).is_file():
            raise
        logger.error("%s; rewriting %s in place", describe_os_error(exc), path)
        data = json.dumps(payload).encode()
        with Path(path).open("r+b") as handle:
            handle.write(data)
            handle.truncate(len(data))
            handle.flush()
            os.fsync(handle.fileno())
