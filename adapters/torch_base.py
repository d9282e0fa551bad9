"""What every torch adapter does the same way: its weights file, its device, its seed, its checkpoint writes.

`TorchAdapter` sits between `Adapter` and the adapters whose model is a torch network (MEDIAR, YOLO,
CellPose, CellSeg1, ...), so none of them re-implements:

- weights: the constructor's ``weights`` (a known name or a local path) is resolved to an existing file and
  checked against its published hashes (`harness.weights.check`: a missing file raises
  `MissingWeightsError` with the fetch command; a file that is not the released one is a loud warning, which
  the run records). The adapter reads ``self.weights_path`` (None = random init) — construction-time weights
  are the zero-shot model *and* the fine-tuning init;
- the torch device (``torch_device``), failing clearly when CUDA is asked for and absent;
- seeding from the run's seed (``seed_everything``: torch's generator + a numpy `Generator` for the data);
- checkpoint writes through `harness.io.atomic_path` (``save``): a killed run never leaves half a file.

torch is imported inside the methods only: importing an adapter stays free.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import Adapter
from harness.errors import ConfigError
from harness.io import atomic_path

if TYPE_CHECKING:
    import numpy as np
    import torch

    from harness.integrity import WeightsCheck

logger = logging.getLogger(__name__)


class TorchAdapter(Adapter):
    """An `Adapter` over a torch model: resolved + checked weights, device, seeding, atomic saves."""

    packages = ("torch",)

    def __init__(self, weights: str | None = None, device: str = "cpu") -> None:
        """Args:
        weights: a known weights name, a local file path, or None for random initialisation; resolved here
            (``self.weights_path``, ``self.weights_check``).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (already resolved from ``auto`` by the harness).
        """
        super().__init__(weights=weights, device=device)
        self.weights_check: WeightsCheck | None = None
        self.weights_path: Path | None = None
        if weights:
            from harness.weights import check

            self.weights_check = check(weights)  # MissingWeightsError names the fetch command
            self.weights_path = self.weights_check.path

    def torch_device(self) -> torch.device:
        """``self.device`` as a `torch.device`; CUDA asked for but not visible is a `ConfigError`."""
        import torch

        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} requested but torch sees no CUDA device; use --device cpu")
        return torch.device(self.device)

    def seed_everything(self) -> np.random.Generator:
        """Seed torch's global generator with the run's seed; return a numpy `Generator` seeded with it too."""
        import numpy as np
        import torch

        torch.manual_seed(self.seed)
        return np.random.default_rng(self.seed)

    @staticmethod
    def save(obj: Any, path: Path) -> Path:
        """``torch.save`` through `harness.io.atomic_path` (written to a temporary name, then renamed)."""
        import torch

        with atomic_path(Path(path)) as partial:
            torch.save(obj, str(partial))
        return Path(path)
