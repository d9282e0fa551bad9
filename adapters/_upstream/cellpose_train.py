"""cellpose 3 training in our own loop: ``train_seg``'s recipe, with cached targets, bounded memory and resume.

Why not ``cellpose.train.train_seg``: at the dataset's scale it recomputes the flow targets of every label map
on every call (8 s per 2592 x 1944 image on a CPU), holds every image and target in memory several times over
(float32 flows, a normalised copy, its own ``astype`` copies: 6.8 GB for 30 images) and keeps no optimiser state,
so a killed training restarts from epoch 0. This loop is built from cellpose's public pieces — its network, its
image normalisation (``transforms.convert_image`` + ``normalize_img``), its flow targets
(``dynamics.labels_to_flows``), its diameters (``utils.diameters``) and its augmentation
(``transforms.random_rotate_and_resize``) — and follows ``train_seg`` (cellpose 3.1.1) step for step: the same
learning-rate schedule (linear warm-up over 10 epochs from 0, halvings at the end of long runs), the same
optimiser, ``np.random.seed(epoch)`` at every epoch, the same image draws, crops, rescaling by diameter, loss
and validation-loss epochs — so for the same inputs it ends with the same weights (tested).

What differs is where the arrays live: normalised images and flow targets are computed once per content
(`harness.cache`: keyed by the array's bytes, the cellpose version and, for flows, the device kind that computed
them), stored as ``.npy`` and memory-mapped one image at a time while a crop is cut, so memory does not grow
with the number of images. A checkpoint (network, optimiser, epoch, losses, numpy and torch random states) is
written atomically at most every ``checkpoint_minutes`` of training; a training started again in the same
folder with the same inputs continues from it and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import array_digest, cached_npy
from harness.io import atomic_path

logger = logging.getLogger(__name__)

#: Bump when what is cached under the kinds below changes meaning.
CODE_VERSION = "1"
CHECKPOINT = "resume.pt"
NET_CHANNELS = 2  # cyto3's input: the grayscale image and an empty second channel (channels=[0, 0])
_now = time.monotonic  # the training clock (read once per epoch; tests replace it)


@dataclass(frozen=True)
class Schedule:
    """``train_seg``'s keywords this loop honours (``checkpoint_minutes`` is ours)."""

    epochs: int
    learning_rate: float
    weight_decay: float
    batch_size: int
    sgd: bool
    nimg_per_epoch: int | None
    rescale: bool
    scale_range: float
    bsize: int
    min_train_masks: int
    momentum: float = 0.9
    checkpoint_minutes: float = 5.0


@dataclass
class TrainSet:
    """Images ready for cropping: cached normalised images + flow targets (paths), foregrounds and diameters."""

    names: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)  # (C, H, W) float32, C = 1 when channel 2 is empty
    flows: list[Path] = field(default_factory=list)  # (2, H, W) float32: Y and X flow
    foregrounds: list[np.ndarray] = field(default_factory=list)  # H x W bool: the cell-probability target
    diameters: list[float] = field(default_factory=list)
    masks: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    cached: int = 0  # how many images' targets were read back from the cache

    def __len__(self) -> int:
        return len(self.names)

    def keep(self, index: Iterable[int]) -> TrainSet:
        picked = list(index)
        return TrainSet(*([getattr(self, f)[i] for i in picked] for f in
                          ("names", "images", "flows", "foregrounds", "diameters", "masks", "keys")))

    def crop_inputs(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i`` (C x H x W, memory-mapped) and its ``[cellprob, flow Y, flow X]`` target (in memory)."""
        image = np.load(self.images[i], mmap_mode="r")
        flows = np.load(self.flows[i], mmap_mode="r")
        target = np.empty((3, *flows.shape[1:]), np.float32)
        target[0] = self.foregrounds[i]
        target[1:] = flows
        return image, target


def _version() -> str:
    import cellpose

    return str(getattr(cellpose, "version", "?"))


def _normalized(image: np.ndarray) -> np.ndarray:
    """The image as ``train_seg(channels=[0, 0], normalize=True)`` hands it to the network (C x H x W)."""
    from cellpose import models, transforms

    converted = transforms.convert_image(image, channels=[0, 0], channel_axis=None).transpose(2, 0, 1)
    params = {**models.normalize_default, "normalize": True}
    out = transforms.normalize_img(converted, normalize=params, axis=0)
    return out[:1] if not out[1:].any() else out  # an empty second channel is added back when cropping


def _flows(labels: np.ndarray, device: Any) -> np.ndarray:
    """The Y and X flows ``train_seg`` derives from a label map (``labels_to_flows`` renumbers a copy)."""
    from cellpose import dynamics

    return dynamics.labels_to_flows([labels.copy()], device=device)[0][2:4]


def prepare(items: Iterable[tuple[str, np.ndarray, np.ndarray]], device: Any, what: str, bar: Any = None
            ) -> TrainSet:
    """Cache normalised images and flow targets of (name, image, label map) items, one item in memory at a time.

    `bar`: a tqdm bar advanced per image. Flows are computed on `device` (cellpose's GPU and CPU flows differ in
    the last bits, so the device kind is part of their key).
    """
    from cellpose import utils

    version, kind = _version(), getattr(device, "type", str(device))
    out = TrainSet()
    for name, image, labels in items:
        image_key = {"image": array_digest(image), "cellpose": version, "code": CODE_VERSION}
        label_key = {"labels": array_digest(labels), "cellpose": version, "device": kind, "code": CODE_VERSION}
        image_path, hit_i = cached_npy("cellpose-images", image_key, lambda im=image: _normalized(im))
        flow_path, hit_f = cached_npy("cellpose-flows", label_key, lambda lm=labels: _flows(lm, device))
        out.cached += hit_i and hit_f
        diameter, sizes = utils.diameters(labels)
        out.names.append(name)
        out.images.append(image_path)
        out.flows.append(flow_path)
        out.foregrounds.append(labels > 0)
        out.diameters.append(max(float(diameter), 5.0))  # train_seg's floor
        out.masks.append(len(sizes))
        out.keys.append(f"{image_key['image']}:{label_key['labels']}")
        if bar is not None:
            bar.update(1)
    logger.info("cellpose %s: targets of %d image(s), %d read back from the cache", what, len(out), out.cached)
    return out


def learning_rates(epochs: int, rate: float) -> np.ndarray:
    """``train_seg``'s per-epoch LR: 0 → `rate` over 10 epochs, then flat; long runs end with 10 halvings."""
    lr = np.concatenate([np.linspace(0, rate, 10), np.full(max(0, epochs - 10), rate)])
    tail = 100 if epochs > 300 else 50 if epochs > 100 else 0
    if tail:
        lr = lr[:-tail]
        for _ in range(10):
            lr = np.concatenate([lr, np.full(tail // 10, lr[-1] / 2)])
    return lr


def _loss(target: np.ndarray, out: Any, device: Any) -> Any:
    """cellpose's segmentation loss: MSE of the flows (targets x 5) / 2 + BCE of the cell probability."""
    import torch

    flows = 5.0 * torch.from_numpy(target[:, 1:]).to(device)
    loss = torch.nn.functional.mse_loss(out[:, :2], flows) / 2.0
    cells = torch.from_numpy(target[:, 0] > 0.5).to(device).float()
    return loss + torch.nn.functional.binary_cross_entropy_with_logits(out[:, -1], cells)


def _crops(data: TrainSet, inds: np.ndarray, net: Any, schedule: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """Augmented crops of images `inds`, cut one image at a time (the same random draws as a batch call)."""
    from cellpose import transforms

    imgs, lbls = [], []
    for i in inds:
        image, target = data.crop_inputs(int(i))
        # float64 like train_seg's (numpy 2 would multiply a python float in float32: other crops)
        rsc = np.array([data.diameters[i]]) / net.diam_mean.item() if schedule.rescale else np.ones(1, "float32")
        img, lbl = transforms.random_rotate_and_resize([image], Y=[target], rescale=rsc,
                                                       scale_range=schedule.scale_range,
                                                       xy=(schedule.bsize, schedule.bsize))[:2]
        if img.shape[1] < NET_CHANNELS:
            img = np.concatenate([img, np.zeros((1, NET_CHANNELS - img.shape[1], *img.shape[2:]), img.dtype)], 1)
        imgs.append(img)
        lbls.append(lbl)
        del image, target
    return np.concatenate(imgs), np.concatenate(lbls)


def _fingerprint(train: TrainSet, val: TrainSet | None, schedule: Schedule, init: str) -> str:
    """What a checkpoint must match to be resumed: the inputs, the schedule (not how often it saves), the init."""
    spec = {**asdict(schedule), "checkpoint_minutes": None, "train": train.keys, "init": init,
            "val": val.keys if val else [], "cellpose": _version(), "code": CODE_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _save_checkpoint(path: Path, net: Any, optimizer: Any, state: dict[str, Any]) -> None:
    import torch

    kind, key, pos, has_gauss, gauss = np.random.get_state()
    payload = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), **state,
               "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                         "has_gauss": int(has_gauss), "gauss": float(gauss)},
               "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    with atomic_path(path) as tmp:
        torch.save(payload, str(tmp))


def _load_checkpoint(path: Path, fingerprint: str, device: Any) -> dict[str, Any] | None:
    import torch

    if not path.is_file():
        return None
    try:
        payload = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint only costs a restart
        logger.warning("%s unreadable (%s: %s); training from epoch 0", path, type(exc).__name__, exc)
        return None
    if payload.get("fingerprint") != fingerprint:
        logger.warning("%s was written for other inputs or another schedule; training from epoch 0", path)
        return None
    return payload


def _restore_rng(payload: dict[str, Any]) -> None:
    import torch

    rng = payload["numpy"]
    np.random.set_state((rng["kind"], rng["key"].numpy().astype(np.uint32), rng["pos"], rng["has_gauss"],
                         rng["gauss"]))
    torch.set_rng_state(payload["torch"].cpu())
    if payload["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda"]])


def _validation_loss(net: Any, val: TrainSet, schedule: Schedule, device: Any) -> float:
    """train_seg's test loss: every validation image once, drawn with seed 42, crops without gradients."""
    import torch

    np.random.seed(42)
    order = np.random.permutation(len(val))
    total = 0.0
    net.eval()
    with torch.no_grad():
        for k in range(0, len(order), schedule.batch_size):
            imgs, lbls = _crops(val, order[k:k + schedule.batch_size], net, schedule)
            total += _loss(lbls, net(torch.from_numpy(imgs).to(device))[0], device).item() * len(imgs)
    return total / len(order)


def train(net: Any, train_set: TrainSet, val_set: TrainSet | None, schedule: Schedule, out_dir: Path,
          model_name: str, init: str, bar: Any = None) -> tuple[Path, np.ndarray, dict[str, Any]]:
    """Train `net` in place; returns the network file (``out_dir/models/model_name``), the epoch losses and
    what the run did (``resumed_from``: the first epoch run here, ``epoch_s``: mean seconds per epoch run).

    `bar`: a tqdm bar over epochs (advanced per epoch). `init`: what the weights started from (a resume only
    continues a checkpoint of the same init).
    """
    import torch

    device = net.device
    if schedule.min_train_masks > 0:
        few = [i for i, n in enumerate(train_set.masks) if n < schedule.min_train_masks]
        if few:
            logger.warning("%d train image(s) with fewer than %d masks left out: %s", len(few),
                           schedule.min_train_masks, ", ".join(train_set.names[i] for i in few))
            train_set = train_set.keep(i for i in range(len(train_set)) if i not in few)
    nimg = len(train_set)
    per_epoch = schedule.nimg_per_epoch or nimg
    probs = np.full(nimg, 1.0 / nimg)
    probs /= probs.sum()
    net.diam_labels.data = torch.Tensor([np.mean(train_set.diameters)]).to(device)
    lrs = learning_rates(schedule.epochs, schedule.learning_rate)
    if schedule.sgd:
        optimizer = torch.optim.SGD(net.parameters(), lr=schedule.learning_rate,
                                    weight_decay=schedule.weight_decay, momentum=schedule.momentum)
    else:
        optimizer = torch.optim.AdamW(net.parameters(), lr=schedule.learning_rate,
                                      weight_decay=schedule.weight_decay)
    checkpoint = out_dir / CHECKPOINT
    fingerprint = _fingerprint(train_set, val_set, schedule, init)
    losses = np.zeros(schedule.epochs)
    start, lavg, nsum = 0, 0.0, 0
    resumed = _load_checkpoint(checkpoint, fingerprint, device)
    if resumed is not None:
        net.load_state_dict(resumed["net"])
        optimizer.load_state_dict(resumed["optimizer"])
        start, lavg, nsum = int(resumed["epoch"]), float(resumed["lavg"]), int(resumed["nsum"])
        losses[:start] = resumed["losses"].numpy()[:start]
        _restore_rng(resumed)
        logger.info("cellpose: resumed from %s at epoch %d of %d", checkpoint, start, schedule.epochs)
    if bar is not None:
        bar.update(start)
    t0 = saved = _now()
    cpu0 = time.process_time()
    for epoch in range(start, schedule.epochs):
        np.random.seed(epoch)
        if nimg != per_epoch:
            order = np.random.choice(np.arange(nimg), size=(per_epoch,), p=probs)
        else:
            order = np.random.permutation(np.arange(nimg))
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[epoch])  # a python float: the checkpoint holds no numpy scalar
        net.train()
        for k in range(0, per_epoch, schedule.batch_size):
            imgs, lbls = _crops(train_set, order[k:min(k + schedule.batch_size, per_epoch)], net, schedule)
            loss = _loss(lbls, net(torch.from_numpy(imgs).to(device))[0], device)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_loss = loss.item() * len(imgs)  # one device sync per batch
            lavg += batch_loss
            nsum += len(imgs)
            losses[epoch] += batch_loss
        losses[epoch] /= per_epoch
        now = _now()
        if epoch == 5 or epoch % 10 == 0:
            val_loss = _validation_loss(net, val_set, schedule, device) if val_set else 0.0
            logger.info("cellpose epoch %d: train_loss=%.4f, val_loss=%.4f, LR=%.6f, %.1f s", epoch, lavg / nsum,
                        val_loss, lrs[epoch], now - t0)
            if bar is not None:
                bar.set_postfix_str(f"train_loss={lavg / nsum:.4f}, val_loss={val_loss:.4f}")
            lavg, nsum = 0.0, 0
        if bar is not None:
            bar.update(1)
        if epoch + 1 < schedule.epochs and now - saved >= 60 * schedule.checkpoint_minutes:
            state = {"epoch": epoch + 1, "lavg": lavg, "nsum": nsum, "fingerprint": fingerprint,
                     "losses": torch.from_numpy(losses.copy())}
            _save_checkpoint(checkpoint, net, optimizer, state)
            saved = now
            logger.info("cellpose: checkpoint after epoch %d written to %s", epoch, checkpoint)
    filename = out_dir / "models" / model_name
    filename.parent.mkdir(parents=True, exist_ok=True)
    # written under its own name in a private folder, then moved: atomic, and byte for byte train_seg's file
    # (torch.save names the archive inside after the file)
    with tempfile.TemporaryDirectory(dir=filename.parent, prefix=".saving-") as tmp:
        net.save_model(str(Path(tmp) / model_name))
        os.replace(Path(tmp) / model_name, filename)
    checkpoint.unlink(missing_ok=True)
    run = max(schedule.epochs - start, 1)
    return filename, losses, {"resumed_from": start, "epoch_s": round((_now() - t0) / run, 3),
                              "epoch_cpu_s": round((time.process_time() - cpu0) / run, 3)}
