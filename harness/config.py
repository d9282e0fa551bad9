"""Model configs (``configs/models/<model>.yaml``): parameters, zero-shot weights, fine-tuning init, profiles.

Everything is checked before any model is built: unknown keys fail naming the allowed ones, ``params``
against the adapter's constructor and ``train`` against the keyword-only arguments of its ``train``.
A profile (``paper`` = the paper's schedules, for a GPU; ``quick`` = minutes on a CPU) may override
``params``, ``train``, ``zero_shot`` and ``finetune``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import adapters
from harness.dataset import CONFIG_DIR
from harness.errors import ConfigError

logger = logging.getLogger(__name__)

_TOP = {"model", "params", "zero_shot", "finetune", "profiles"}
_PROFILE = {"params", "train", "zero_shot", "finetune"}
_ZERO_SHOT = {"weights", "skip_reason"}
_FINETUNE = {"init"}


@dataclass(frozen=True)
class ModelConfig:
    """A model config resolved for one profile."""

    model: str
    profile: str
    params: dict[str, Any]
    train: dict[str, Any]
    zero_shot_weights: str | dict[str, str] | None
    zero_shot_skip_reason: str | None
    finetune_init: str | None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def zero_shot_for(self, target: str) -> tuple[str | None, str | None]:
        """``(weights, None)`` to run the zero-shot row of `target`, or ``(None, reason)`` to skip it."""
        w = self.zero_shot_weights
        if w is None:
            if adapters.get(self.model).weights:
                return None, self.zero_shot_skip_reason or f"no zero-shot weights configured for {self.model}"
            return None, None  # a model without weights (classical) runs zero-shot as is
        if isinstance(w, str):
            return w, None
        if target in w:
            return w[target], None
        return None, self.zero_shot_skip_reason or f"no zero-shot weights configured for target {target}"

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for ``config.yaml`` of a run."""
        return {
            "model": self.model,
            "profile": self.profile,
            "params": self.params,
            "train": self.train,
            "zero_shot": {"weights": self.zero_shot_weights, "skip_reason": self.zero_shot_skip_reason},
            "finetune": {"init": self.finetune_init},
            "source": self.source,
        }


def config_path(model: str) -> Path:
    """The shipped config of a registered model."""
    return CONFIG_DIR / "models" / f"{model}.yaml"


def _check(raw: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return raw


def load_model_config(model: str, profile: str = "quick", path: Path | str | None = None) -> ModelConfig:
    """Read, merge and validate a model config for `profile`."""
    cls = adapters.get(model)
    path = Path(path) if path else config_path(model)
    if not path.is_file():
        raise ConfigError(f"{path}: model config not found (every adapter ships configs/models/<name>.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    raw = _check(raw, _TOP, str(path))
    if raw.get("model", model) != model:
        raise ConfigError(f"{path}: says model {raw['model']!r} but was loaded for {model!r}")
    profiles = _check(raw.get("profiles"), set(raw.get("profiles") or {}), f"{path}: profiles")
    if profile not in profiles:
        raise ConfigError(f"{path}: unknown profile {profile!r}; available: {', '.join(profiles) or 'none'}")
    prof = _check(profiles[profile], _PROFILE, f"{path}: profiles.{profile}")
    zero = {**_check(raw.get("zero_shot"), _ZERO_SHOT, f"{path}: zero_shot"),
            **_check(prof.get("zero_shot"), _ZERO_SHOT, f"{path}: profiles.{profile}.zero_shot")}
    fine = {**_check(raw.get("finetune"), _FINETUNE, f"{path}: finetune"),
            **_check(prof.get("finetune"), _FINETUNE, f"{path}: profiles.{profile}.finetune")}
    params = {**(raw.get("params") or {}), **(prof.get("params") or {})}
    train = dict(prof.get("train") or {})
    for reserved in ("weights", "device"):
        if reserved in params:
            raise ConfigError(f"{path}: params must not set {reserved!r} (the harness passes it)")
    from adapters.base import check_keys

    check_keys(cls.__init__, {**params, "weights": None, "device": "cpu"}, f"{path}: params of model '{model}'")
    try:
        cls.check_schedule(train)
    except ConfigError as exc:  # name the file and profile the schedule came from
        raise ConfigError(f"{path}: profiles.{profile}.train: {exc}") from exc
    weights = zero.get("weights")
    if weights is not None and not isinstance(weights, (str, dict)):
        raise ConfigError(f"{path}: zero_shot.weights must be a weights name or a target -> name mapping")
    return ModelConfig(
        model=model,
        profile=profile,
        params=params,
        train=train,
        zero_shot_weights=weights,
        zero_shot_skip_reason=zero.get("skip_reason"),
        finetune_init=fine.get("init"),
        source=str(path),
    )
