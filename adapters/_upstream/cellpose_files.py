"""Cellpose 3 network files: what a file must hold, and the diameters it implies, whatever the device.

cellpose 3.1.1.3 derives the scale of a model from the file in a device-dependent way
(``models.CellposeModel.__init__`` → ``resnet_torch.CPnet.load_model``):

- on CPU, ``load_model`` first re-initialises the network with ``self.__init__(nbase, nout, sz, mkldnn, conv_3D,
  self.diam_mean)`` — the 6th positional argument is ``max_pool``, so ``diam_mean`` falls back to its default
  30 — and then loads the file with ``strict=False``; on a GPU it loads into the network as built, with the
  diameter the model chose (17 for a file named ``…nucleitorch_0``, else 30);
- a file without ``diam_labels`` therefore keeps 30 on CPU and the built diameter on GPU, and a file without
  ``diam_mean`` leaves the network's ``diam_mean`` at 30 on CPU even for the nuclei model (17 on GPU);
- ``eval(diameter=None)`` rescales by ``diam_mean / diam_labels`` and ``train_seg`` rescales to
  ``net.diam_mean``, so the nuclei model predicted 17/30 smaller on CPU than on GPU, and a custom file with
  ``diam_mean`` 17 and no ``diam_labels`` was rescaled by 17/30 on both.

`settle_diameters` fixes one rule after loading: ``diam_mean`` = the model's (the file's value, or cellpose's
17 / 30 by name), ``diam_labels`` = the file's value, else ``diam_mean`` (no rescale), written into the model
and its network alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

logger = logging.getLogger(__name__)

#: What every cellpose ``CPnet`` file has (checked before a file is handed to cellpose). ``diam_mean`` and
#: ``diam_labels`` are not required: cellpose loads with ``strict=False`` and older built-in files lack them.
_CPNET_KEY = "output.2.weight"
_CPNET_PREFIXES = ("downsample.", "upsample.")


def check_cellpose_file(path: Path) -> dict[str, Any]:
    """The state dict of a cellpose 3 network file (``CPnet``); anything else fails clearly, naming the file."""
    import torch

    if not path.is_file():
        raise ConfigError(f"{path}: cellpose checkpoint not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ConfigError(
            f"{path}: not a cellpose checkpoint (torch cannot read it as a plain state dict: "
            f"{type(exc).__name__}); "
            "was it written by another adapter? Use the file that the cellpose adapter's train() returned"
        ) from exc
    if not isinstance(state, dict):
        kind = type(state).__name__
        raise ConfigError(f"{path}: not a cellpose checkpoint (holds a {kind}, not a state dict)")
    if "W2" in state:
        raise ConfigError(f"{path}: a Cellpose 4 (Cellpose-SAM) file; this adapter runs cellpose 3 models")
    missing = [key for key in (_CPNET_KEY,) if key not in state]
    missing += [f"{p}*" for p in _CPNET_PREFIXES if not any(str(k).startswith(p) for k in state)]
    if missing:
        raise ConfigError(
            f"{path}: not a cellpose checkpoint (state dict lacks {', '.join(missing)}; it has e.g. "
            f"{', '.join(list(state)[:3]) or 'no keys'}); was it written by another adapter?"
        )
    return state


def settle_diameters(model: Any, state: dict[str, Any] | None) -> tuple[float, float]:
    """Set ``diam_mean`` / ``diam_labels`` of a loaded ``CellposeModel`` by the one rule above; returns them.

    `state` is the file's state dict (None for a random init, where both are the model's ``diam_mean``).
    """
    import torch

    diam_mean = float(model.diam_mean)
    labels = (state or {}).get("diam_labels")
    diam_labels = float(torch.as_tensor(labels).reshape(-1)[0]) if labels is not None else diam_mean
    if not diam_mean > 0 or not diam_labels > 0:
        raise ConfigError(f"{model.pretrained_model}: cellpose diameters must be > 0 (diam_mean {diam_mean}, "
                          f"diam_labels {diam_labels})")
    model.diam_mean, model.diam_labels = diam_mean, diam_labels
    with torch.no_grad():
        model.net.diam_mean.fill_(diam_mean)
        model.net.diam_labels.fill_(diam_labels)
    return diam_mean, diam_labels
