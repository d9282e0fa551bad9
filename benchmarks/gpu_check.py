"""`make gpu-check`: the paper-profile rehearsal of every model at full resolution, with the figures a GPU-day needs.

One command, ready to run the moment a GPU machine is at hand (CUDA when ``torch.cuda.is_available()``, else
CPU; the device is named in the output). For each model it runs the stages of
``c6bench bench --profile paper --rehearse N`` in this process on a temporary dataset of 2592 x 1944 images
made by tiling the bundled sample's first image of each split (the Glioma C6 size; same layout and annotations
as ``data/sample``), and measures:

- seconds per training step: the median interval between consecutive optimiser steps (a global torch
  optimiser-step hook; the first step, which pays for warm-up, is left out). The rehearsal's epochs are one
  step long, so per-epoch work (validation, checkpoints) is included: an upper bound. Models without an
  optimiser (classical) get train-stage seconds / steps;
- seconds per image for prediction (each ``predict`` call timed, per mode);
- peak GPU memory per stage (``torch.cuda.max_memory_allocated``; none on CPU);
- the projected wall time of the full paper matrix on the real dataset (spec train 30 / valid 4 / test 11,
  gen 30; targets cells, type_a, type_b, soma): per model, units (one per target, or one multiclass model)
  x ensemble members x the paper schedule's training samples (`Adapter.schedule_size`) x measured seconds per
  sample, plus every predicted image x seconds per image. Evaluation (milliseconds per image) is not counted.

Weights: a cached file (``$C6BENCH_WEIGHTS``) is used where present; otherwise a random file in the released
layout (`tests/fixtures/make_weights.py`; MEDIAR without the smp 0.3.3 side env: the adapter's own network, the
same layout) — timing and memory do not depend on the values, but post-processing of random outputs may
differ from a trained model's. Figures go to stdout and to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "fixtures")]

import adapters  # noqa: E402
from harness.io import atomic_path, write_json, write_text  # noqa: E402

logger = logging.getLogger("gpu_check")

#: Images per split of the real dataset (DESIGN.md) and the refs of configs/datasets/glioma_c6.yaml.
GLIOMA_IMAGES = {"spec/train": 30, "spec/valid": 4, "spec/test": 11, "gen/test": 30}
SPLITS = ("train", "valid", "test")


# --------------------------------------------------------------------------------------------- inputs


def full_size_dataset(root: Path, height: int, width: int) -> Path:
    """``root`` with data/sample's layout: each split's first sample image tiled to height x width, its
    polygons repeated per tile (those cut by the border dropped); returns a dataset YAML pointing there."""
    import numpy as np
    import tifffile
    import yaml

    from harness.images import read_image

    sample = REPO / "data" / "sample"
    for split in SPLITS:
        coco = json.loads((sample / "spec" / split / "annotations.coco.json").read_text())
        image = coco["images"][0]
        pixels = read_image(sample / "spec" / split / "images" / image["file_name"])
        h0, w0 = pixels.shape[:2]
        reps = (-(-height // h0), -(-width // w0)) + (1,) * (pixels.ndim - 2)
        tiled = np.tile(pixels, reps)[:height, :width]
        out = root / "spec" / split
        with atomic_path(out / "images" / image["file_name"]) as tmp:
            tifffile.imwrite(tmp, tiled)
        annotations = []
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            for dy in range(0, height, h0):
                for dx in range(0, width, w0):
                    x, y, w, h = ann["bbox"]
                    if x + dx + w >= width or y + dy + h >= height:
                        continue
                    seg = [[v + (dx if i % 2 == 0 else dy) for i, v in enumerate(p)] for p in ann["segmentation"]]
                    annotations.append({**ann, "id": len(annotations) + 1, "segmentation": seg,
                                        "bbox": [x + dx, y + dy, w, h]})
        write_text(out / "annotations.coco.json", json.dumps({
            **coco, "images": [{**image, "height": height, "width": width}], "annotations": annotations}))
    config = yaml.safe_load((REPO / "configs" / "datasets" / "sample.yaml").read_text())
    config.update(name=f"sample-{width}x{height}", root=str(root))
    return write_text(root / "dataset.yaml", yaml.safe_dump(config, sort_keys=False))


def referenced_weights(model: str) -> list[str]:
    """Known weights names the paper profile of `model` reads (any config value that is one)."""
    import make_weights

    from harness.config import load_model_config

    return make_weights.referenced(load_model_config(model, "paper").to_dict())


def prepare_weights(cache: Path, names: list[str], mode: str) -> dict[str, str]:
    """Fill `cache` with each name: the user's cached file (symlinked), else a random released-layout file."""
    import make_weights

    from harness.weights import cache_dir, spec

    origin = {}
    for name in names:
        target, user = cache / spec(name).file, cache_dir() / spec(name).file
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "auto" and user.is_file():
            target.symlink_to(user.resolve())
            origin[name] = f"cached {user}"
            continue
        try:
            make_weights.build(name, cache, small=False)
            origin[name] = "random, released layout"
        except make_weights.SideEnvMissing:  # MEDIAR: the adapter's own network has the same (tested) layout
            import torch

            from adapters._upstream.mediar.network import build_network

            with atomic_path(target) as tmp:
                torch.save(build_network("mit_b5").state_dict(), str(tmp))
            origin[name] = "random, the adapter's own MEDIARFormer (smp 0.3.3 side env absent)"
    return origin


# --------------------------------------------------------------------------------------------- measuring


class Probe:
    """Optimiser-step times and timed predict calls of the stage that is running."""

    def __init__(self, cuda: bool) -> None:

        self.cuda, self.steps, self.predicts = cuda, [], []
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(self._step)

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def _step(self, *_: Any) -> None:
        self._sync()
        self.steps.append(time.perf_counter())

    def wrap(self, cls: type) -> None:
        original = cls.predict

        @functools.wraps(original)
        def predict(adapter: Any, image: Any) -> Any:
            start = time.perf_counter()
            out = original(adapter, image)
            self._sync()
            self.predicts.append(time.perf_counter() - start)
            return out

        cls.predict = predict

    def reset(self) -> None:
        self.steps, self.predicts = [], []
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def run_model(model: str, data_yaml: Path, device: str, steps: int, out: Path, probe: Probe) -> dict[str, Any]:
    """Every stage of the model's paper rehearsal, in order, with its figures; a failed stage blocks its dependents."""
    from harness.run import BenchSpec, Runner

    runner = Runner(BenchSpec(model=model, data=str(data_yaml), profile="paper", device=device, out=out,
                              bootstrap=0, rehearse=steps))
    probe.wrap(runner.cls)
    stages, failed, record = [], set(), {"model": model}
    for stage in runner.stages():
        entry: dict[str, Any] = {"stage": stage.id.split("/", 1)[1], "kind": stage.kind}
        if failed & set(stage.deps):
            failed.add(stage.id)
            stages.append({**entry, "state": "blocked"})
            continue
        probe.reset()
        start = time.perf_counter()
        try:
            runner.execute(stage)
            entry["state"] = "done"
        except Exception as exc:  # noqa: BLE001 - a failed stage is a finding, recorded; the check goes on
            failed.add(stage.id)
            entry.update(state="failed", error=f"{type(exc).__name__}: {exc}"[:300])
        entry.update(seconds=round(time.perf_counter() - start, 2), peak_gpu_mib=probe.peak_mib())
        if stage.kind == "train":
            intervals = [b - a for a, b in zip(probe.steps, probe.steps[1:], strict=False)]
            entry["optimizer_steps"] = len(probe.steps)
            entry["s_per_step"] = round(statistics.median(intervals), 4) if intervals else \
                round(entry["seconds"] / steps, 4)
        if stage.kind == "predict" and probe.predicts:
            entry["s_per_image"] = round(statistics.median(probe.predicts), 3)
        stages.append(entry)
    record["stages"] = stages
    record["projection"] = project(runner, stages, steps)
    return record


def own_environment(model: str) -> Any:
    """The model's own environment (`harness.envs`) when this process is not under it, else None."""
    from harness import envs

    env = envs.for_model(model)
    return env if env is not None and not env.active else None


def run_in_environment(env: Any, model: str, args: argparse.Namespace, work: Path, environ: dict[str, str]
                       ) -> dict[str, Any]:  # the child's report
    """This check for one model, run under the model's own environment: its stages import its packages in the
    process where the probe measures them (the bench would run them in children the probe cannot see)."""
    import subprocess

    out = work / f"{model}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--models", model, "--steps", str(args.steps),
           "--size", args.size, "--device", args.device, "--weights", args.weights, "--out", str(out),
           "--work", str(work / model)]
    done = subprocess.run(cmd, env=env.child_environ(environ), check=False)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"gpu-check under the environment {env.path.name} exited {done.returncode}")
    return json.loads(out.read_text())


def project(runner: Any, stages: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """The full paper matrix of this model on the real dataset, from the rehearsal's figures."""
    from harness import dataset as ds
    from harness.classes import units_of
    from harness.config import load_model_config

    cls, paper = runner.cls, load_model_config(runner.spec.model, "paper")
    glioma = ds.load_dataset_config(ds.CONFIG_DIR / "datasets" / "glioma_c6.yaml")
    units = units_of(cls, glioma, list(glioma.targets_of(glioma.train)), paper)
    members = len(paper.finetune_members())  # an ensemble trains one model per init
    train = next((s for s in stages if s["kind"] == "train" and s["state"] == "done"), None)
    rehearsal_steps, rehearsal_samples = cls.schedule_size(runner.model_cfg.train, 1)
    full_steps, full_samples = cls.schedule_size(paper.train, GLIOMA_IMAGES[glioma.train])
    per_image = {m: [s["s_per_image"] for s in stages if s["kind"] == "predict" and s["stage"].split("/")[1] == m
                     and "s_per_image" in s] for m in ("zero_shot", "finetuned")}
    out: dict[str, Any] = {"units": len(units), "members": members, "paper_steps_per_unit": full_steps,
                           "paper_samples_per_unit": full_samples}
    seconds = 0.0
    if train:  # samples per measured optimiser call (cellpose's LR-0 epoch is a call too; classical has none)
        calls = train.get("optimizer_steps") or rehearsal_steps
        s_per_sample = train["s_per_step"] * calls / max(rehearsal_samples, 1)
        out["train_s"] = round(len(units) * members * full_samples * s_per_sample, 1)
        seconds += out["train_s"]
    for mode, times in per_image.items():
        if not times:
            continue
        images = 0
        for unit in units:
            if mode == "zero_shot" and paper.zero_shot_for(unit.targets[0] if unit.name != "all" else "all")[1]:
                continue
            images += sum(GLIOMA_IMAGES[r] for r in glioma.evaluate
                          if any(t in glioma.targets_of(r) for t in unit.targets))
        out[f"predict_{mode}_images"] = images
        out[f"predict_{mode}_s"] = round(images * statistics.median(times), 1)
        seconds += out[f"predict_{mode}_s"]
    out["total_s"] = round(seconds, 1)
    out["complete"] = bool(train) and all(per_image[m] for m in ("finetuned",))
    return out


# --------------------------------------------------------------------------------------------- output


def table(report: dict[str, Any]) -> str:
    """The printed summary: one line per stage, one projection line per model, the matrix total."""
    lines = [f"gpu-check on {report['device']} ({report['device_name']}): paper rehearsal, {report['steps']} "
             f"optimiser steps, images {report['size']}", "",
             f"{'stage':52} {'state':8} {'s':>8} {'s/step':>8} {'s/image':>8} {'peak MiB':>9}"]
    for rec in report["models"]:
        if rec.get("error"):
            lines.append(f"{rec['model']:52} failed   {rec['error']}")
        for s in rec["stages"]:
            if s["kind"] in ("evaluate", "results"):
                continue
            cells = [f"{s.get(k):>8}" if s.get(k) is not None else f"{'-':>8}"
                     for k in ("seconds", "s_per_step", "s_per_image")]
            peak = f"{s['peak_gpu_mib']:>9}" if s.get("peak_gpu_mib") is not None else f"{'n/a':>9}"
            lines.append(f"{rec['model'] + '/' + s['stage']:52} {s['state']:8} {' '.join(cells)} {peak}"
                         + (f"  {s['error']}" if s.get("error") else ""))
    lines += ["", "projected paper matrix on Glioma C6 (units x schedule; every predicted image):"]
    for rec in report["models"]:
        p = rec["projection"]
        lines.append(f"  {rec['model']:10} train {p.get('train_s', '-')} s, predict zero-shot "
                     f"{p.get('predict_zero_shot_s', '-')} s, fine-tuned {p.get('predict_finetuned_s', '-')} s, "
                     f"total {p['total_s']} s ({p['total_s'] / 3600:.2f} h)" + ("" if p["complete"] else
                                                                                 " INCOMPLETE (a stage failed)"))
    lines.append(f"  all models: {report['projected_total_s']} s = {report['projected_total_s'] / 3600:.2f} h "
                 f"on {report['device']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="all", help="comma-separated model names (default all)")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps of the rehearsal (default 3)")
    parser.add_argument("--size", default="2592x1944", help="WIDTHxHEIGHT of the tiled images")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--weights", choices=("auto", "random"), default="auto",
                        help="auto: cached files where present, else random released-layout ones")
    parser.add_argument("--out", type=Path, default=REPO / "gpu_check.json", help="JSON with every figure")
    parser.add_argument("--work", type=Path, default=None, help="keep the dataset, weights and runs here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from harness.config import profiles_of
    from harness.plan import resolve_device
    from harness.rehearsal import check_steps

    steps = check_steps(args.steps, "--steps")
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = resolve_device(args.device)
    models = ([m for m in adapters.names() if "paper" in profiles_of(m)] if args.models == "all"  # paper profiles only
              else [m.strip() for m in args.models.split(",")])
    import torch

    cuda = device.startswith("cuda")
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    sys.stdout.write(f"gpu-check: device {device} ({name}); models {', '.join(models)}\n")
    start = time.perf_counter()
    environ = dict(os.environ)  # for models measured under their own environment (their own weights too)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = args.work or Path(tmp)
        data_yaml = full_size_dataset(work / "data", height, width)
        names = sorted({n for m in models if not own_environment(m) for n in referenced_weights(m)})
        origin = prepare_weights(work / "weights", names, args.weights)
        os.environ["C6BENCH_WEIGHTS"] = str(work / "weights")
        probe = Probe(cuda=cuda)
        records = []
        for model in models:
            try:
                if env := own_environment(model):
                    child = run_in_environment(env, model, args, work, environ)
                    records += child["models"]
                    origin.update(child["weights"])
                    continue
                records.append(run_model(model, data_yaml, device, steps, work / "runs" / model, probe))
            except Exception as exc:  # noqa: BLE001 - a model that cannot even be planned is a finding too
                records.append({"model": model, "stages": [], "error": f"{type(exc).__name__}: {exc}"[:300],
                                "projection": {"total_s": 0.0, "complete": False}})
    report = {"device": device, "device_name": name, "steps": steps, "size": f"{width}x{height}",
              "weights": origin, "models": records, "wall_s": round(time.perf_counter() - start, 1),
              "projected_total_s": round(sum(r["projection"]["total_s"] for r in records), 1),
              "torch": torch.__version__}
    write_json(args.out, report, indent=2)
    sys.stdout.write(table(report) + f"wall {report['wall_s']} s; figures in {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
