"""Training end to end: cnnlab vs Keras + ImageDataGenerator vs idiomatic PyTorch vs a
hand-written device-resident loop, with the same model, augmentation, data and batch size.

Per workload (bench/train_workloads.py): extract the data subset, decode it once with cnnlab's
load_data and save the splits for the peers; then, in sequence and each in its own process (so
peak memory is per pipeline):

1. cnnlab through `Experiment` + `run_experiment` (bench/train_child.py --pipeline cnnlab);
2. Keras 3 `model.fit(ImageDataGenerator(...).flow(x, y, batch_size))` in .venv-bench
   (bench/keras_train_peer.py; without that environment its row says "not run: make bench-env");
3. idiomatic PyTorch: DataLoader with workers + per-sample torchvision v2 transforms;
4. the hand-written reference loop (bench/train_peers.py).

Every epoch is one pass over the training split plus one over the validation split. The first
epoch is the warm-up (allocator, tracing, compilation) and is shown on its own; img/s is over the
later epochs. Time to the workload's target validation accuracy counts every epoch from the
first. The tables and goals are in bench/train_report.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BENCH_PYTHON,
    REPO_ROOT,
    gpu_name,
    load_average,
    machine_info,
    progress,
    write_outputs,
)
from bench.train_report import NotRun, TrainRow, markdown, ratios
from bench.train_workloads import WORKLOADS, Prepared, Workload, cnnlab_data, prepare
from cnnlab.presets import AUGMENT_PRESETS

NAME = "train"
CPU_THREADS = 2  # torch threads, DataLoader workers, TensorFlow's pools
GPU_VAL_BATCH = 256  # every pipeline's validation batch on CUDA; on the CPU the training batch
SEED = 0
KERAS_SCRIPT = Path(__file__).with_name("keras_train_peer.py")
CHILD_TIMEOUT_S = 3600
PIPELINE_ORDER = ("cnnlab", "keras", "idiomatic", "reference")  # the order
# On CUDA, Keras is Keras 3 on PyTorch (the GPU image has no TensorFlow), for the workloads
# with a Keras layer list; the synthetic-data ceiling is for the workloads that ask for it
# (ResNet-50 from a JPEG folder)
CUDA_PIPELINES = ("cnnlab", "keras", "idiomatic", "reference", "synthetic")


@dataclass
class Result:
    rows: list[TrainRow]
    not_run: list[NotRun]
    ratios: list
    machine: dict[str, Any]
    settings: dict[str, Any]
    markdown: str
    files: list[Path]


def run(
    datasets: Path,
    out_dir: Path,
    *,
    quick: bool = False,
    devices: tuple[str, ...] = ("cpu",),
    keras_python: Path = BENCH_PYTHON,
    workloads: tuple[Workload, ...] = WORKLOADS,
) -> Result:
    """Train every workload with every pipeline; write `train.{md,json}` into out_dir."""
    load_before = load_average()
    machine = machine_info()
    rows: list[TrainRow] = []
    not_run: list[NotRun] = []
    chosen = []
    for workload in workloads:
        if workload.gpu_only and "cuda" not in devices:
            reason = "skipped: GPU only (needs --device cuda)"
            progress(f"{NAME}: {workload.key}: {reason}")
            not_run.append(NotRun(f"{workload.key}/all/cpu", workload, "all", "cpu", reason))
        else:
            chosen.append(workload)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as temp:
        jobs, decoded = {}, {}
        for w in chosen:
            work = Path(temp) / w.key
            jobs[w.key], decoded[w.key] = prepare_jobs(w, datasets, work, quick, devices)
        for pipeline, device, group in plan(chosen, devices, quick):
            found, missed = run_group(pipeline, device, group, jobs, keras_python)
            rows += found
            not_run += missed
    machine |= {"load_avg_before": load_before, "load_avg_after": load_average()}
    machine["gpu"] = gpu_name(devices)
    machine["keras_peer"] = next((r.versions for r in rows if r.pipeline == "keras"), {})
    settings = _settings(quick, devices, keras_python, workloads) | {"decoded": decoded}
    found_ratios = ratios(rows)
    text = markdown(rows, not_run, found_ratios, machine, settings)
    payload = {
        "benchmark": NAME,
        "settings": settings,
        "machine": machine,
        "rows": [row.as_dict() for row in rows],
        "not_run": [item.as_dict() for item in not_run],
        "ratios": [vars(r) for r in found_ratios],
    }
    files = write_outputs(out_dir, NAME, text, payload)
    return Result(rows, not_run, found_ratios, machine, settings, text, files)


def plan(workloads: list[Workload], devices: tuple[str, ...], quick: bool):
    """(pipeline, device, workloads) per process, in order. A full run gives every workload and
    pipeline its own process, so peak memory is per pipeline and workload; a quick run, which
    measures nothing, runs all workloads of a pipeline in one process to save start-ups. Keras
    (tensorflow-cpu) runs on the CPU only, so a GPU-only workload has no Keras row."""
    groups = []
    for device in devices:
        pipelines = PIPELINE_ORDER if device == "cpu" else CUDA_PIPELINES
        here = [w for w in workloads if device == "cuda" or not w.gpu_only]
        for pipeline in pipelines:
            mine = [w for w in here if _runs(pipeline, device, w)]
            if quick:
                groups.append((pipeline, device, mine))
            else:
                groups += [(pipeline, device, [w]) for w in mine]
    if not quick:  # workload by workload: cnnlab, then its peers
        order = {w.key: k for k, w in enumerate(workloads)}
        groups.sort(key=lambda g: (devices.index(g[1]), order[g[2][0].key]))
    return [group for group in groups if group[2]]


def _runs(pipeline: str, device: str, workload: Workload) -> bool:
    if pipeline == "synthetic":
        return workload.ceiling
    if pipeline == "keras" and device == "cuda":  # its script builds Keras layer lists only
        return not workload.peer_model
    return True


def prepare_jobs(
    workload: Workload, datasets: Path, work: Path, quick: bool, devices: tuple[str, ...]
) -> tuple[dict[str, Path], dict[str, float]]:
    """The data, decoded once, and the job file of each device; what the decoding took."""
    progress(f"{NAME}: {workload.key}: extracting and decoding the data once")
    prepared = prepare(workload, datasets, work, quick)
    for split in ("train", "val"):  # Keras takes NHWC
        nhwc = np.load(prepared.arrays[f"x_{split}"]).transpose(0, 2, 3, 1)
        prepared.arrays[f"x_{split}_nhwc"] = work / f"x_{split}_nhwc.npy"
        np.save(prepared.arrays[f"x_{split}_nhwc"], np.ascontiguousarray(nhwc))
    decoded = {"seconds": prepared.decode_s, "images": prepared.train_size + prepared.val_size}
    jobs = {device: write_job(workload, prepared, work, quick, device) for device in devices}
    return jobs, decoded


def run_group(
    pipeline: str,
    device: str,
    group: list[Workload],
    jobs: dict[str, dict[str, Path]],
    keras_python: Path,
) -> tuple[list[TrainRow], list[NotRun]]:
    """One process for the group's workloads; a row for each, or the reason it has none."""
    keys = {w.key: f"{w.key}/{pipeline}/{device}" for w in group}
    paths = [str(jobs[w.key][device]) for w in group]
    extra_env = {}
    if pipeline == "keras" and device == "cuda":  # Keras 3 on PyTorch, in this interpreter
        if importlib.util.find_spec("keras") is None:
            reason = "not run: keras is not installed here (bench/gpu_wheels.txt lists it)"
            return [], [NotRun(keys[w.key], w, pipeline, device, reason) for w in group]
        command = [sys.executable, str(KERAS_SCRIPT), *paths]
        extra_env = {"KERAS_BACKEND": "torch"}
    elif pipeline == "keras":
        if not Path(keras_python).is_file():
            return [], [
                NotRun(keys[w.key], w, pipeline, device, "not run: make bench-env") for w in group
            ]
        command = [str(keras_python), str(KERAS_SCRIPT), *paths]
    else:
        command = [sys.executable, "-m", "bench.train_child", *paths]
        command += ["--pipeline", pipeline, "--device", device]
    outcome, reason = run_child(command, ", ".join(keys.values()), extra_env)
    rows, not_run = [], []
    for workload in group:
        found = outcome.get(workload.key)
        if found is not None and "not_run" in found:
            reason, found = found["not_run"], None
        if found is None:
            not_run.append(NotRun(keys[workload.key], workload, pipeline, device, reason))
            continue
        rows.append(TrainRow.from_child(keys[workload.key], workload, found))
        progress(f"{NAME}: {rows[-1].key}: {rows[-1].summary()}")
    return rows, not_run


def write_job(workload: Workload, prepared: Prepared, work: Path, quick: bool, device: str) -> Path:
    """What every pipeline of one workload and device is told: the same data, model, augmentation
    parameters, batch size, optimiser and epochs."""
    size = workload.size(quick)
    threads = CPU_THREADS if device == "cpu" else min(8, os.cpu_count() or 1)
    # Keras validates at the training batch size, and so does cnnlab on the CPU by default
    val_batch = workload.batch_size if device == "cpu" else GPU_VAL_BATCH
    data = cnnlab_data(workload, prepared.folder, prepared.cache_dir).model_dump(mode="json")
    job = {
        "workload": workload.key,
        "work": str(work),
        "seed": SEED,
        "threads": threads,
        "workers": threads,
        "input_shape": list(prepared.input_shape),
        "num_classes": len(prepared.classes),
        "layers": prepared.layers,
        "peer_model": workload.peer_model,
        "augment": AUGMENT_PRESETS.get(workload.augment),
        "batch_size": workload.batch_size,
        "val_batch_size": val_batch,
        "epochs": size.epochs,
        "optimizer": workload.optimizer,
        "arrays": {name: str(path) for name, path in prepared.arrays.items()},
        "cnnlab": {
            "seed": SEED,
            "data": data,
            "augment": {"preset": workload.augment, "rescale": 1 / 255},  # as the Keras scripts
            "model": workload.model,
            "train": {
                "epochs": size.epochs,
                "batch_size": workload.batch_size,
                "optimizer": workload.optimizer,
                "compile": "default" if device == "cuda" else "off",  # as the reference loop
            },
            "evaluate": {"batch_size": val_batch},
        },
    }
    path = work / f"job-{device}.json"
    path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    return path


def run_child(
    command: list[str], what: str, extra_env: dict[str, str] | None = None
) -> tuple[dict[str, dict[str, Any]], str]:
    """The child's JSON lines by workload, and why the others are missing; never raises."""
    # the repository first (bench/ itself), then the caller's path: where cnnlab is not
    # installed (the GPU image: bench/gpu_check.sh), src/ and the wheels come from it
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"} | (extra_env or {})
    progress(f"{NAME}: {what}: running")
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return {}, f"not run: {type(err).__name__}"
    wall = time.perf_counter() - started
    found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    why = (
        "failed: no result line"
        if done.returncode == 0
        else f"failed (exit {done.returncode}): {tail}"
    )
    return {item["workload"]: item | {"wall_s": wall} for item in found}, why


def _settings(
    quick: bool, devices: tuple[str, ...], python: Path, workloads: tuple[Workload, ...]
) -> dict[str, Any]:
    return {
        "quick": quick,
        "devices": list(devices),
        "cpu_threads": CPU_THREADS,
        "val_batch_size": {"cpu": "the training batch", "cuda": GPU_VAL_BATCH},
        "seed": SEED,
        "keras_python": str(python),
        "workloads": {
            w.key: {
                "title": w.title,
                "model": w.model,
                "augment": AUGMENT_PRESETS.get(w.augment) | {"preset": w.augment},
                "batch_size": w.batch_size,
                "optimizer": w.optimizer,
                "target": w.target,
                "per_class": w.size(quick).per_class,
                "epochs": w.size(quick).epochs,
                "gpu_only": w.gpu_only,
            }
            for w in workloads
        },
    }
