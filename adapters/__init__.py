"""Adapter registry: one file per model, registered with ``@register("name")``, found automatically.

Every public module in this package is imported by `discover()` (cheap: adapters import their upstream library
inside methods only), so a model is found by its file alone; with its config and its test that is all a new
model needs (README, "Adding a model"). ``base`` and ``torch_base`` hold the contract; ``_upstream`` the rebuilt
upstream pieces. This package imports nothing of the harness but its errors: `harness.weights` reads the weights
tables from here, never the other way round.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.errors import ConfigError

if TYPE_CHECKING:
    from adapters.base import Adapter

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Adapter]] = {}
_DISCOVERED = False
_PRIVATE = {"base", "torch_base"}


def register(name: str) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: make an `Adapter` subclass available as ``name``."""

    def decorator(cls: type[Adapter]) -> type[Adapter]:
        from adapters.base import Adapter

        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise TypeError(f"@register({name!r}) must decorate a subclass of adapters.base.Adapter, not {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"adapter name {name!r} is registered twice ({_REGISTRY[name]!r} and {cls!r})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def discover() -> None:
    """Import every adapter module of this package once (registration happens at import)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _PRIVATE:
            continue
        importlib.import_module(f"{__name__}.{info.name}")
    _DISCOVERED = True


def names() -> list[str]:
    """Registered adapter names, sorted."""
    discover()
    return sorted(_REGISTRY)


def get(name: str) -> type[Adapter]:
    """The adapter class registered as ``name``; unknown names fail with suggestions."""
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}") from None
