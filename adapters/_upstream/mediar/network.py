"""The MEDIAR-Former network, rebuilt on segmentation-models-pytorch, and its checkpoint files.

Follows MEDIAR's ``train_tools/models/MEDIARFormer.py`` (no MEDIAR code is used): an smp ``MAnet`` with a SegFormer
``mit_b*`` encoder, decoder channels (1024, 512, 256, 128, 64), a 256-channel position-attention block, every ReLU
of encoder and decoder swapped for Mish, smp's segmentation head removed and two "deep" heads added
(``cellprob_head``: 1 channel, ``gradflow_head``: 2 channels). The output is cellpose's layout: (dY, dX,
cell-probability logit). Attribute names follow MEDIAR's ``MEDIARFormer(MAnet)``, so its released checkpoints load
with *strict* key matching (MEDIAR itself loads with ``strict=False``, which hides mismatches). Checked when this was
written: the state-dict layout (names and shapes, mit_b0 and mit_b5) equals the one smp 0.3.3 — MEDIAR's pin —
produces, and a mit_b0 state dict saved under smp 0.3.3 gives bit-identical outputs here. smp >= 0.5 calls the
decoder with a list (``decoder(features)``; MEDIAR's ``decoder(*features)`` fails there).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from adapters.base import WeightSpec
from harness.errors import ConfigError

# Direct-download form of the Google Drive files behind MEDIAR's README link (folder
# 1RgMxHIT7WsKNjir3wXSl7BrzlpS05S18); file ids and MD5s as used by annolid's MEDIAR wrapper
# (healthonrails/annolid, annolid/utils/weights.py, which verifies them). MEDIAR publishes none: these md5s are checked.
_DRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
_LICENCE = ("MEDIAR code MIT; weights have no separate licence and were pre-trained on CC-BY-NC data (Cellpose, "
            "LIVECell): research/non-commercial; the mit encoder (SegFormer) is under the NVIDIA Source Code "
            "License (non-commercial)")
FROM_PHASE1 = WeightSpec(
    name="from_phase1", file="mediar/from_phase1.pth", url=f"{_DRIVE}168MtudjTMLoq9YGTyoD2Rjl_d3Gy6c_L", sha256=None,
    licence=_LICENCE, md5="e0ccb052828a9f05e21b2143939583c5",
    description="MEDIAR-Former mit_b5 challenge model fine-tuned from pre-training phase 1",
)
FROM_PHASE2 = WeightSpec(
    name="from_phase2", file="mediar/from_phase2.pth", url=f"{_DRIVE}1JJ2-QKTCk-G7sp5ddkqcifMxgnyOrXjx", sha256=None,
    licence=_LICENCE, md5="a595336926767afdf1ffb1baffd5ab7f",
    description="MEDIAR-Former mit_b5 challenge model fine-tuned from pre-training phase 2",
)
#: The released MEDIAR-Former checkpoints (mit_b5), the adapter's known weights.
RELEASED = (FROM_PHASE1, FROM_PHASE2)

ENCODERS = tuple(f"mit_b{i}" for i in range(6))
DECODER_CHANNELS = (1024, 512, 256, 128, 64)
PAB_CHANNELS = 256
#: Keys every MEDIAR-Former state dict has (a cheap check before a file is accepted; the full check is strict).
_SIGNATURE_KEYS = ("encoder.patch_embed1.proj.weight", "cellprob_head.3.weight", "gradflow_head.3.weight")


@functools.cache
def _network_class() -> type:
    """Define the network class on first use (keeps torch and smp out of the adapter's import)."""
    import segmentation_models_pytorch as smp
    import torch
    from torch import nn

    def deep_head(in_channels: int, out_channels: int) -> nn.Sequential:
        # MEDIAR's DeepSegmentationHead; the two Identity slots (upsampling, activation) keep its indices 0, 2, 3.
        return nn.Sequential(
            nn.Conv2d(in_channels, in_channels // 2, kernel_size=3, padding=1),
            nn.Mish(inplace=True),
            nn.BatchNorm2d(in_channels // 2),
            nn.Conv2d(in_channels // 2, out_channels, kernel_size=3, padding=1),
            nn.Identity(),
            nn.Identity(),
        )

    def relu_to_mish(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Mish(inplace=True))
            else:
                relu_to_mish(child)

    class MediarFormer(smp.MAnet):
        """MA-Net + mit encoder + Mish + cell-probability and flow heads; output (dY, dX, logit)."""

        def __init__(self, encoder_name: str = "mit_b5") -> None:
            super().__init__(encoder_name=encoder_name, encoder_weights=None, decoder_channels=DECODER_CHANNELS,
                             decoder_pab_channels=PAB_CHANNELS, in_channels=3, classes=3)
            self.encoder_name = encoder_name
            self.segmentation_head = None
            relu_to_mish(self.encoder)
            relu_to_mish(self.decoder)
            self.cellprob_head = deep_head(DECODER_CHANNELS[-1], 1)
            self.gradflow_head = deep_head(DECODER_CHANNELS[-1], 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.check_input_shape(x)
            decoded = self.decoder(self.encoder(x))
            return torch.cat([self.gradflow_head(decoded), self.cellprob_head(decoded)], dim=1)

    return MediarFormer


def build_network(encoder: str = "mit_b5") -> Any:
    """A randomly initialised MEDIAR-Former; never downloads (``encoder_weights=None``, hub offline)."""
    if encoder not in ENCODERS:
        raise ConfigError(f"model 'mediar': encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an accidental hub call fails fast instead of downloading
    return _network_class()(encoder)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The state dict in a file: a plain one (MEDIAR's files, `train`'s model.pth) or our ``last.pt``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: MEDIAR checkpoint not found")
    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in torch's legacy (non-zip) format cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ConfigError(
            f"{path}: not a MEDIAR checkpoint (torch cannot read it as a plain state dict: {type(exc).__name__}); "
            "a Google Drive download that saved an HTML page instead of the file fails like this — fetch it again"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "optimizer" in state:
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a MEDIAR checkpoint (holds a {type(state).__name__}, not a state dict)")
    return state


def encoder_of(state: dict[str, Any]) -> str | None:
    """Which mit encoder a MEDIAR-Former state dict was built with (embedding width + blocks per stage)."""
    from segmentation_models_pytorch.encoders.mix_transformer import mix_transformer_encoders

    embed = state.get("encoder.patch_embed1.proj.weight")
    if embed is None:
        return None
    depths = [len({key.split(".")[2] for key in state if key.startswith(f"encoder.block{stage}.")})
              for stage in range(1, 5)]
    for name, entry in mix_transformer_encoders.items():
        params = entry["params"]
        if name in ENCODERS and params["embed_dims"][0] == embed.shape[0] and list(params["depths"]) == depths:
            return name
    return None


def check_mediar_file(path: Path, encoder: str) -> None:
    """Cheap check that `path` holds a MEDIAR-Former state dict for `encoder` (strict check when loaded)."""
    state = read_state_dict(path)
    missing = [key for key in _SIGNATURE_KEYS if key not in state]
    if missing:
        raise ConfigError(
            f"{path}: not a MEDIAR-Former checkpoint (state dict lacks {', '.join(missing)}; it has e.g. "
            f"{', '.join(list(state)[:3]) or 'no keys'}); was it written by another adapter?"
        )
    found = encoder_of(state)
    if found != encoder:
        raise ConfigError(f"{path}: a MEDIAR-Former with a {found or 'non-mit'} encoder, but params.encoder is "
                          f"{encoder}; set encoder: {found} to use it (MEDIAR's released weights are mit_b5)")


def load_strict(net: Any, state: dict[str, Any], source: str) -> None:
    """Load `state` into `net` with strict key *and* shape matching; a mismatch raises naming the keys."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        def listing(what: str, items: list[str]) -> str:
            more = f", ... ({len(items) - 8} more)" if len(items) > 8 else ""
            return f"{len(items)} {what} ({', '.join(items[:8])}{more})" if items else ""

        parts = [p for p in (listing("missing key(s)", missing), listing("unexpected key(s)", unexpected),
                             listing("shape mismatch(es)", mismatched)) if p]
        hint = ""
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = "; its keys carry a 'module.' prefix (saved from DataParallel): strip it"
        elif mismatched:
            hint = f"; was it trained with another encoder than {net.encoder_name} (params.encoder)?"
        raise ConfigError(f"{source}: does not match MEDIAR-Former ({net.encoder_name}): {'; '.join(parts)}{hint}")
    net.load_state_dict(state, strict=True)
