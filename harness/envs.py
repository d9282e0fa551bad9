"""Per-model environments: the packages one model needs beyond the project's, layered in front of it.

Cellpose-SAM needs cellpose 4 and cyto3 needs cellpose 3, and both are the import name ``cellpose``; every
model a user adds next brings a pin of its own. Instead of one conda env per method and hand-run scripts, an
adapter declares what it needs on top of the project's environment::

    requirements = ("cellpose==4.2.1.1",)

and ``c6bench env prepare MODEL`` (run by ``make setup``) installs exactly those distributions, without their
dependencies, into ``.envs/<model>-<hash of the requirements>/`` (``pip install --no-deps --target``). That
folder is put first on ``PYTHONPATH`` of the model's own processes only — its train and predict stages run as
``c6bench stage RUN_DIR STAGE_ID`` children, the path SLURM jobs and ``--workers`` use — so they import the
declared versions and everything else (torch, numpy, …) from the project's environment: no second torch, a few
MB on disk. Preparing checks that every dependency the installed distributions declare is met by the layered
environment (a missing one is an error naming it; add it, pinned, to ``requirements``), records what was
installed in ``env.json`` and is a no-op once done. Nothing is downloaded at run time: a missing environment
is a `MissingEnvironmentError` naming the command. Models without requirements run exactly as before,
in-process.

Limits of the layering (said so that an adapter author can judge): the folder is a ``PYTHONPATH`` entry, not a
site dir, so ``.pth`` files in it are not processed; distributions with compiled extensions work when built
for the project's Python and numpy ABI; the project's own pins (torch, torchvision, numpy) may not be
shadowed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import C6BenchError, ConfigError
from harness.io import write_json

logger = logging.getLogger(__name__)

ROOT_ENV = "C6BENCH_ENVS"  # where environments live (default: <repo>/.envs)
RECORD = "env.json"
#: Model stages (they build the adapter); evaluate and results never import a model library.
MODEL_STAGES = ("train", "predict")
#: The project's binary core: shadowing these would load a second copy of a compiled library.
PROTECTED = frozenset({"torch", "torchvision", "torchaudio", "numpy", "triton"})


class PrepareError(C6BenchError):
    """An environment cannot be prepared as declared (a conflict, a missing dependency, pip failed)."""


class MissingEnvironmentError(C6BenchError):
    """A model's environment is not prepared; the message holds the command that prepares it."""


def canonical(name: str) -> str:
    """PEP 503 name (``Segment_Anything`` → ``segment-anything``), to compare distribution names."""
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))


def envs_root() -> Path:
    """``$C6BENCH_ENVS``, else ``.envs/`` of the checkout the harness runs from."""
    from harness.dataset import REPO_ROOT

    return Path(os.environ.get(ROOT_ENV) or REPO_ROOT / ".envs").expanduser()


# -------------------------------------------------------------------------------------------- one environment


@dataclass(frozen=True)
class Environment:
    """The environment of one model: its declared requirements and the folder they are installed in."""

    model: str
    requirements: tuple[str, ...]

    @property
    def key(self) -> str:
        """Hash of what is installed: the requirements and the Python they are installed for."""
        payload = {"requirements": list(self.requirements), "python": platform.python_version_tuple()[:2]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def path(self) -> Path:
        return envs_root() / f"{self.model}-{self.key}"

    @property
    def ready(self) -> bool:
        """Prepared (``env.json`` is written last, after the folder is complete)."""
        return (self.path / RECORD).is_file()

    def record(self) -> dict[str, Any]:
        """``env.json``: requirements, installed distributions and versions, install seconds, size."""
        try:
            return json.loads((self.path / RECORD).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def require(self) -> Environment:
        """Self when prepared, else `MissingEnvironmentError` naming the command (nothing downloads here)."""
        if not self.ready:
            raise MissingEnvironmentError(
                f"model {self.model} runs in its own environment ({', '.join(self.requirements)}), which is "
                f"not prepared at {self.path}; prepare it once with `c6bench env prepare {self.model}` "
                "(needs the package registry; `make setup` does it)"
            )
        return self

    @property
    def active(self) -> bool:
        """Does this process import from this environment (its folder on ``sys.path``)?"""
        target = self.path.resolve()
        return any(p and Path(p).resolve() == target for p in sys.path)

    def child_environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment variables of a child process under this environment: its folder first on PYTHONPATH.

        The checkout the parent runs from comes next, so the child runs the same harness code.
        """
        from harness.dataset import REPO_ROOT

        env = dict(os.environ if base is None else base)
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(self.path), str(REPO_ROOT), *rest]))
        return env


def of(cls: type) -> Environment | None:
    """The environment an adapter class declares (``requirements``), or None: it runs in the project's own."""
    requirements = tuple(getattr(cls, "requirements", ()) or ())
    return Environment(cls.name, requirements) if requirements else None


def for_model(name: str) -> Environment | None:
    import adapters

    return of(adapters.get(name))


def for_stage(cls: type, stage: Any) -> Environment | None:
    """The environment a stage of `cls` runs under (train/predict of a model with requirements), or None."""
    return of(cls) if stage.kind in MODEL_STAGES else None


def key_fields(cls: type, stage: Any) -> dict[str, Any]:
    """What a model stage's key adds under an environment (nothing for other stages and models: keys stay)."""
    env = for_stage(cls, stage)
    return {"environment": list(env.requirements)} if env else {}


def check_prepared(classes: Iterable[type]) -> None:
    """Fail before any stage runs when a model's environment is missing (all missing ones in one message)."""
    missing = [env for env in (of(c) for c in classes) if env and not env.ready]
    if len(missing) == 1:
        missing[0].require()
    if missing:
        names = " ".join(e.model for e in missing)
        raise MissingEnvironmentError(
            f"models {', '.join(e.model for e in missing)} run in their own environments, which are not "
            f"prepared ({', '.join(str(e.path) for e in missing)}); prepare them once with "
            f"`c6bench env prepare {names}` (or `c6bench env prepare all`; `make setup` does it)"
        )


def run_child(env: Environment, argv: Sequence[str], what: str) -> int:
    """Run ``python -m harness ARGV`` under `env` with the console attached; returns its exit status.

    The child ends with this process (`harness.concurrency`: ``C6BENCH_PARENT_PID``), and an interrupted wait
    interrupts it first (it records its stage as interrupted) instead of leaving it behind.
    """
    from harness.concurrency import PARENT_ENV, stop

    env.require()
    logger.info("%s → child process under environment %s", what, env.path.name)
    cmd = [sys.executable, "-m", "harness", *argv]
    proc = subprocess.Popen(cmd, env={**env.child_environ(), PARENT_ENV: str(os.getpid())})
    try:
        return proc.wait()
    finally:
        stop([proc])


# --------------------------------------------------------------------------------------------- preparing


def _distributions(path: Path) -> dict[str, metadata.Distribution]:
    return {canonical(d.metadata["Name"]): d for d in metadata.distributions(path=[str(path)])}


def _requirement_name(text: str) -> str:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return canonical(Requirement(text).name)
    except InvalidRequirement as exc:
        raise ConfigError(f"requirement {text!r} is not a valid pip requirement ({exc})") from exc


def unmet_dependencies(path: Path) -> list[str]:
    """Dependencies of the distributions in `path` that it and the project's environment do not meet."""
    from packaging.requirements import Requirement

    inside = _distributions(path)
    problems = []
    for name, dist in sorted(inside.items()):
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an optional extra, or not for this platform / Python
            dep = canonical(req.name)
            try:
                have = inside[dep].version if dep in inside else metadata.version(req.name)
            except metadata.PackageNotFoundError:
                problems.append(f"{name} needs {text}, which is not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {text}, but {dep} {have} is installed")
    return problems


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def prepare(env: Environment, pip_args: Sequence[str] = ()) -> dict[str, Any]:
    """Install `env` once (``pip install --no-deps --target``), check it, write ``env.json``; return that.

    Installs into a temporary folder renamed into place when complete, so an interrupted prepare leaves
    nothing that looks ready. Older folders of the same model (other requirement hashes) are removed
    afterwards.
    """
    if env.ready:
        logger.info("environment of %s is ready: %s", env.model, env.path)
        return env.record()
    names = [_requirement_name(r) for r in env.requirements]
    protected = sorted(set(names) & PROTECTED)
    if protected:
        raise PrepareError(
            f"model {env.model}: requirements must not replace the project's {', '.join(protected)} (a "
            "second copy of a compiled core library); pin a model version that works with the project's, "
            "see requirements.lock"
        )
    env.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = env.path.with_name(f".{env.path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(tmp),
           "--disable-pip-version-check", "--no-warn-script-location", "--quiet", *pip_args,
           *env.requirements]
    logger.info("preparing environment of %s: %s", env.model, " ".join(cmd[1:]))
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise PrepareError(f"model {env.model}: pip could not install {', '.join(env.requirements)} "
                                    f"(exit {out.returncode}):\n{(out.stderr or out.stdout).strip()[-2000:]}")
        record = _check_installed(env, tmp, names)
        record["seconds"] = round(time.perf_counter() - start, 2)
        record["bytes"] = _size(tmp)
        write_json(tmp / RECORD, record, indent=2)
        try:
            tmp.rename(env.path)
        except OSError:  # prepared meanwhile by another process: keep that one
            if not env.ready:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in env.path.parent.glob(f"{env.model}-*"):
        if stale != env.path and (stale / RECORD).is_file():
            logger.info("removing %s (an older environment of %s)", stale, env.model)
            shutil.rmtree(stale, ignore_errors=True)
    logger.info("environment of %s prepared in %.1f s (%.1f MB): %s", env.model, record["seconds"],
                record["bytes"] / 1e6, env.path)
    return record


def _check_installed(env: Environment, path: Path, names: Sequence[str]) -> dict[str, Any]:
    """What pip put in `path` must be exactly what was declared, with every dependency met."""
    installed = _distributions(path)
    extra = sorted(set(installed) - set(names))
    if extra:
        raise PrepareError(f"model {env.model}: pip installed undeclared distributions {', '.join(extra)}")
    problems = unmet_dependencies(path)
    if problems:
        raise PrepareError(
            f"model {env.model}: its environment would not work — " + "; ".join(problems)
            + ". Add the missing distribution, pinned, to the adapter's requirements (or pin a version of "
            "the model package that fits the project's environment)"
        )
    shadowed = {}
    for name in installed:
        try:
            shadowed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"model": env.model, "requirements": list(env.requirements), "key": env.key,
            "python": platform.python_version(),
            "packages": {n: d.version for n, d in sorted(installed.items())}, "shadows": shadowed,
            "prepared": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# --------------------------------------------------------------------------------------------- provenance


def imported_versions(names: Iterable[str]) -> dict[str, str]:
    """Distribution → ``version (folder)`` for each of `names` this process has imported, from where it did.

    The version is read from the distribution that sits beside the imported module, not from the first one on
    the path, so a run records what it really ran (cellpose 4.2.1.1 from .envs/…, or 3.1.1.3 from
    site-packages).
    """
    wanted = {_requirement_name(n) for n in names}  # names or requirements (``cellpose==4.2.1.1``)
    out: dict[str, str] = {}
    for module_name, dists in metadata.packages_distributions().items():
        module = sys.modules.get(module_name)
        hits = [d for d in dists if canonical(d) in wanted]
        if module is None or not hits or not getattr(module, "__file__", None):
            continue
        file = Path(module.__file__)
        folder = file.parent.parent if file.name == "__init__.py" else file.parent
        for dist in hits:
            found = next(iter(metadata.distributions(name=dist, path=[str(folder)])), None)
            out[canonical(dist)] = f"{found.version if found else 'unknown'} ({folder})"
    return dict(sorted(out.items()))


def versions(cls: type, base: dict[str, str]) -> dict[str, str]:
    """The manifest's package versions for a model: the project's, with its environment's on top."""
    env = of(cls)
    if env is None:
        return base
    return {**base, **env.record().get("packages", {})}
