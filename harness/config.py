"""Model configs (``configs/models/<model>.yaml``): parameters, zero-shot weights, fine-tuning init, profiles.

Everything is checked before any model is built: unknown keys fail naming the allowed ones, ``params``
against the adapter's constructor and ``train`` against the keyword-only arguments of its ``train``.
A profile (``paper`` = the paper's schedules, for a GPU; ``quick`` = minutes on a CPU, the only one a shipped config
must have: tests and ``make bench`` run it) may override ``params``, ``train``, ``zero_shot``, ``finetune``, ``classes``, ``evaluate`` and ``label_maps``; every key
is explained in ``configs/models/_template.yaml``.

Ensembles are a harness concept: ``zero_shot.weights`` (or a target's entry) and ``finetune.init`` may
list several weights. Zero-shot then predicts with the average of the listed models; fine-tuning trains
one model per listed init (each its own stage) and predicts with the average of the trained ones.
``ensemble: false`` in either block keeps only the first listed member (the single-model switch).
Only adapters with ``supports_ensemble`` accept a list of more than one member (checked here).
``zero_shot.params`` override ``params`` for the zero-shot rows only (what runs there need not be what is
fine-tuned: e.g. SAM's own generator for CellSeg1); they are merged key by key, top level then profile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adapters
from harness.dataset import CONFIG_DIR
from harness.errors import ConfigError
from harness.io import read_yaml

logger = logging.getLogger(__name__)

_TOP = {"model", "params", "zero_shot", "finetune", "classes", "evaluate", "label_maps", "profiles"}
_PROFILE = {"params", "train", "zero_shot", "finetune", "classes", "evaluate", "label_maps"}
_ZERO_SHOT = {"weights", "skip_reason", "ensemble", "params"}
_FINETUNE = {"init", "ensemble"}
_EVALUATE = {"merge_iou"}
_LABEL_MAPS = {"rule", "min_pixels"}


@dataclass(frozen=True)
class ModelConfig:
    """A model config resolved for one profile."""

    model: str
    profile: str
    params: dict[str, Any]
    train: dict[str, Any]
    zero_shot_weights: str | list[str] | dict[str, str | list[str]] | None
    zero_shot_skip_reason: str | None
    finetune_init: tuple[str, ...]  # () = random init; several = one fine-tuning each, predicted as an ensemble
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    zero_shot_ensemble: bool = True
    finetune_ensemble: bool = True
    classes: tuple[str, ...] | None = None  # what a multiclass model learns (targets); None = the dataset's
    merge_iou: float | None = None  # class-agnostic mask-IoU NMS of the classes a target merges; None = off
    zero_shot_params: dict[str, Any] = field(default_factory=dict)  # over `params`, for zero-shot rows only
    label_rule: str = "last"  # how the harness flattens training samples of a model with needs_label_maps
    min_pixels: int = 10

    def zero_shot_for(self, target: str) -> tuple[tuple[str, ...], str | None]:
        """``(weights, None)`` to run the zero-shot row of `target` (several = an ensemble), or ``((), reason)``.

        ``((), None)``: a model without weights (classical) runs zero-shot as is.
        """
        w = self.zero_shot_weights
        if w is None:
            if adapters.get(self.model).weights:
                return (), self.zero_shot_skip_reason or f"no zero-shot weights configured for {self.model}"
            return (), None
        if isinstance(w, dict):
            if target not in w:
                return (), self.zero_shot_skip_reason or f"no zero-shot weights configured for target {target}"
            w = w[target]
        names = (w,) if isinstance(w, str) else tuple(w)
        return (names if self.zero_shot_ensemble else names[:1]), None

    def finetune_members(self) -> tuple[str | None, ...]:
        """The init of each fine-tuning run: ``(None,)`` = one from random init; several = an ensemble."""
        if not self.finetune_init:
            return (None,)
        return self.finetune_init if self.finetune_ensemble else self.finetune_init[:1]

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for ``config.yaml`` of a run."""
        return {
            "model": self.model,
            "profile": self.profile,
            "params": self.params,
            "train": self.train,
            "zero_shot": {"weights": self.zero_shot_weights, "skip_reason": self.zero_shot_skip_reason,
                          "ensemble": self.zero_shot_ensemble, "params": self.zero_shot_params},
            "finetune": {"init": list(self.finetune_init), "ensemble": self.finetune_ensemble},
            "classes": list(self.classes) if self.classes is not None else None,
            "evaluate": {"merge_iou": self.merge_iou},
            "label_maps": {"rule": self.label_rule, "min_pixels": self.min_pixels},
            "source": self.source,
        }


def config_path(model: str) -> Path:
    """The shipped config of a registered model."""
    return CONFIG_DIR / "models" / f"{model}.yaml"


def profiles_of(model: str, path: Path | str | None = None) -> tuple[str, ...]:
    """The profile names a model config defines (``quick`` always; ``paper`` where the paper has a row)."""
    raw = read_yaml(Path(path) if path else config_path(model))
    return tuple((raw or {}).get("profiles") or {})


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
    raw = _check(read_yaml(path), _TOP, str(path))
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
    base_params = _check(raw.get("params"), set(raw.get("params") or {}), f"{path}: params")
    prof_params = _check(prof.get("params"), set(prof.get("params") or {}), f"{path}: profiles.{profile}.params")
    params = {**base_params, **prof_params}
    train = dict(_check(prof.get("train"), set(prof.get("train") or {}), f"{path}: profiles.{profile}.train"))
    for reserved in ("weights", "device"):
        if reserved in params:
            raise ConfigError(f"{path}: params must not set {reserved!r} (the harness passes it)")
    from adapters.base import check_keys

    check_keys(cls.__init__, {**params, "weights": None, "device": "cpu"}, f"{path}: params of model '{model}'")
    zero_params: dict[str, Any] = {}  # merged key by key: top-level zero_shot.params, then the profile's
    for where, block in ((f"{path}: zero_shot", raw.get("zero_shot")),
                         (f"{path}: profiles.{profile}.zero_shot", prof.get("zero_shot"))):
        extra = (block or {}).get("params")
        zero_params.update(_check(extra, set(extra or {}), f"{where}.params"))
    if {"weights", "device"} & set(zero_params):
        raise ConfigError(f"{path}: zero_shot.params must not set weights or device (zero_shot.weights does)")
    check_keys(cls.__init__, {**zero_params, "weights": None, "device": "cpu"},
               f"{path}: zero_shot.params of model '{model}'")
    places = {k: f"{path}: {f'profiles.{profile}.params' if k in prof_params else 'params'}.{k}" for k in params}
    cls.check_params(params, places)
    cls.check_params(zero_params, f"{path}: zero_shot.params")
    try:
        cls.check_schedule(train, {k: f"{path}: profiles.{profile}.train.{k}" for k in train})
    except ConfigError as exc:  # name the file and profile the schedule came from
        text = str(exc)
        raise ConfigError(text if text.startswith(str(path)) else f"{path}: profiles.{profile}.train: {text}") from exc
    weights = _weights_value(zero.get("weights"), f"{path}: zero_shot.weights")
    init = _weights_value(fine.get("init"), f"{path}: finetune.init", mapping=False)
    init = (init,) if isinstance(init, str) else tuple(init or ())
    ensembles = {"zero_shot": _flag(zero, "ensemble", f"{path}: zero_shot"),
                 "finetune": _flag(fine, "ensemble", f"{path}: finetune")}
    members = {"zero_shot": max((len(v) for v in _lists(weights)), default=1), "finetune": len(init)}
    for block, n in members.items():
        if n > 1 and ensembles[block] and not getattr(cls, "supports_ensemble", False):
            raise ConfigError(f"{path}: {block} lists {n} weights (an ensemble), but model '{model}' cannot predict "
                              f"with an ensemble; list one, or set {block}.ensemble: false to use the first")
    evaluation = {**_check(raw.get("evaluate"), _EVALUATE, f"{path}: evaluate"),
                  **_check(prof.get("evaluate"), _EVALUATE, f"{path}: profiles.{profile}.evaluate")}
    merge_iou = evaluation.get("merge_iou")
    if merge_iou is not None and (isinstance(merge_iou, bool) or not isinstance(merge_iou, (int, float))
                                  or not 0.0 < merge_iou <= 1.0):
        raise ConfigError(f"{path}: evaluate.merge_iou must be an IoU in (0, 1] or null, got {merge_iou!r}")
    rule, min_pixels = _label_maps(cls, raw, prof, f"{path}", profile)
    classes = prof.get("classes", raw.get("classes"))
    if classes is not None and (not isinstance(classes, list) or not classes
                                or not all(isinstance(c, str) for c in classes) or len(set(classes)) < len(classes)):
        raise ConfigError(f"{path}: classes must be a non-empty list of distinct target names, got {classes!r}")
    return ModelConfig(
        model=model,
        profile=profile,
        params=params,
        train=train,
        zero_shot_weights=weights,
        zero_shot_skip_reason=zero.get("skip_reason"),
        finetune_init=init,
        source=str(path),
        zero_shot_ensemble=ensembles["zero_shot"],
        finetune_ensemble=ensembles["finetune"],
        classes=tuple(classes) if classes is not None else None,
        merge_iou=float(merge_iou) if merge_iou is not None else None,
        zero_shot_params=zero_params,
        label_rule=rule,
        min_pixels=min_pixels,
    )


def _label_maps(cls: Any, raw: dict[str, Any], prof: dict[str, Any], path: str, profile: str) -> tuple[str, int]:
    """``(rule, min_pixels)`` of the ``label_maps`` block (profile over top level, defaults last / 10); only for
    needs_label_maps."""
    from harness.convert import RULES

    block = {**_check(raw.get("label_maps"), _LABEL_MAPS, f"{path}: label_maps"),
             **_check(prof.get("label_maps"), _LABEL_MAPS, f"{path}: profiles.{profile}.label_maps")}
    if block and not cls.needs_label_maps:
        raise ConfigError(f"{path}: label_maps is read only for models that train on label maps (needs_label_maps); "
                          f"model '{cls.name}' trains on the overlapping instances: remove it")
    rule, min_pixels = block.get("rule", "last"), block.get("min_pixels", 10)
    if rule not in RULES:
        raise ConfigError(f"{path}: label_maps.rule must be one of {', '.join(RULES)}, got {rule!r}")
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 0:
        raise ConfigError(f"{path}: label_maps.min_pixels must be an integer >= 0, got {min_pixels!r}")
    return rule, min_pixels


def _weights_value(value: Any, where: str, mapping: bool = True) -> Any:
    """A weights name, a non-empty list of distinct names, or (zero-shot) a target -> name/list mapping."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value) or len(set(value)) < len(value):
            raise ConfigError(f"{where} must list distinct weights names, got {value!r}")
        return list(value)
    if mapping and isinstance(value, dict):
        if any(v is None for v in value.values()):
            raise ConfigError(f"{where}: every target needs a weights name or list (leave a target out to skip it)")
        return {str(k): _weights_value(v, f"{where}.{k}", mapping=False) for k, v in value.items()}
    kinds = "a weights name, a list of names (an ensemble)" + (" or a target -> name mapping" if mapping else "")
    raise ConfigError(f"{where} must be {kinds}, got {value!r}")


def _lists(weights: Any) -> list[list[str]]:
    """Every member list in a zero-shot weights value."""
    values = weights.values() if isinstance(weights, dict) else [weights]
    return [[v] if isinstance(v, str) else list(v) for v in values if v is not None]


def _flag(block: dict[str, Any], key: str, where: str) -> bool:
    value = block.get(key, True)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
    return value
