"""`python -m bench --only train --quick`: every pipeline trains every workload and gives a row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def _import_bench() -> None:
    if str(REPO_ROOT) not in sys.path:  # bench/ is a top-level package beside src/
        sys.path.insert(0, str(REPO_ROOT))


def _require_datasets(require) -> None:
    from bench import train_workloads

    for path in train_workloads.missing(DATASETS):
        require(path)  # skips locally, fails on CI, naming the path


def test_quick_train_benchmark_gives_every_pipeline_and_workload_a_row(tmp_path, capsys, require):
    """Keras runs only where `make bench-env` was run; elsewhere its rows say so."""
    _import_bench()
    _require_datasets(require)
    from bench import train_workloads
    from bench.__main__ import main
    from bench.common import BENCH_PYTHON

    from cnnlab.models import MODELS

    assert main(["--only", "train", "--quick", "--out", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))
    rows = {row["key"]: row for row in saved["rows"]}
    not_run = {item["key"]: item["reason"] for item in saved["not_run"]}
    devices = saved["settings"]["devices"]
    for workload in train_workloads.WORKLOADS:
        if workload.gpu_only and "cuda" not in devices:
            assert not_run[f"{workload.key}/all/cpu"].startswith("skipped: GPU only")
            continue
        measured = []
        for device in devices:
            if device == "cpu" and workload.gpu_only:
                continue
            peers = ["idiomatic", "reference"] + (["keras"] if device == "cpu" else [])
            for pipeline in ["cnnlab", *peers]:
                key = f"{workload.key}/{pipeline}/{device}"
                if pipeline == "keras" and not BENCH_PYTHON.is_file():
                    assert not_run[key] == "not run: make bench-env"
                elif pipeline == "cnnlab" and workload.model["name"] not in MODELS:
                    assert not_run[key].startswith("not run: cnnlab:")  # backbones to come
                else:
                    measured.append(rows[key])
        for row in measured:
            assert row["images"] > 0, row["key"]
            assert row["img_per_s"] > 0, row["key"]
            assert len(row["epochs"]) == workload.quick.epochs, row["key"]
            assert 0.0 <= row["best_val_accuracy"] <= 1.0, row["key"]
            assert row["rss_mb"] > 0, row["key"]
        if not workload.peer_model:  # the same layer list everywhere: the same parameter count
            assert len({row["params"] for row in measured}) == 1, workload.key
    assert saved["ratios"] and all(ratio["value"] > 0 for ratio in saved["ratios"])
    assert saved["machine"]["cpu_count"] >= 1 and saved["settings"]["cpu_threads"] == 2
    assert (tmp_path / "train.md").read_text(encoding="utf-8") in printed
    decoded = saved["settings"]["decoded"]  # the folder's one-time decode, stated apart
    assert set(decoded) == {w.key for w in train_workloads.WORKLOADS if w.key in rows_of(rows)}
    assert all(d["seconds"] > 0 and d["images"] > 0 for d in decoded.values())
    assert "Decoding once into cnnlab's cache" in printed


def rows_of(rows: dict) -> set[str]:
    return {key.split("/")[0] for key in rows}


def test_cuda_plan_adds_keras_on_pytorch_and_the_synthetic_ceiling_to_resnet50():
    _import_bench()
    from bench import train, train_workloads

    groups = train.plan(list(train_workloads.WORKLOADS), ("cuda",), quick=False)
    ceilings = [group[2][0].key for group in groups if group[0] == "synthetic"]
    assert ceilings == ["resnet50"]
    pipelines = {group[0] for group in groups}
    assert pipelines == {"cnnlab", "keras", "idiomatic", "reference", "synthetic"}
    keras = [group[2][0].key for group in groups if group[0] == "keras"]  # Keras layer lists
    assert keras == [w.key for w in train_workloads.WORKLOADS if not w.peer_model]
    cpu = train.plan(list(train_workloads.WORKLOADS), ("cpu",), quick=False)
    assert "synthetic" not in {group[0] for group in cpu}


def test_synthetic_ceiling_trains_on_one_fixed_batch_whatever_the_training_pixels(
    tmp_path, require
):
    """The ceiling's steps read no training image: zeroing them changes nothing it measures."""
    _import_bench()
    _require_datasets(require)
    import numpy as np
    import torch
    from bench import train, train_peers, train_workloads

    workload = next(w for w in train_workloads.WORKLOADS if w.key == "s3_basenet")
    jobs, _ = train.prepare_jobs(workload, DATASETS, tmp_path, True, ("cpu",))
    job = json.loads(jobs["cpu"].read_text(encoding="utf-8"))
    arrays = {name: np.load(path) for name, path in job["arrays"].items()}
    cpu = torch.device("cpu")
    records, ceiling = train_peers.run_reference(job, arrays, cpu, synthetic=True)
    blank = arrays | {"x_train": np.zeros_like(arrays["x_train"])}
    _, ceiling_blank = train_peers.run_reference(job, blank, cpu, synthetic=True)
    assert len(records) == job["epochs"]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in records)
    assert all(map(torch.equal, weights(ceiling), weights(ceiling_blank)))
    _, reference = train_peers.run_reference(job, arrays, cpu)
    _, reference_blank = train_peers.run_reference(job, blank, cpu)
    assert not all(map(torch.equal, weights(reference), weights(reference_blank)))


def weights(model) -> list:
    return [p.detach() for p in model.parameters()]


def test_cuda_ratios_carry_the_gpu_goals_and_keras_on_the_same_gpu():
    _import_bench()
    from bench import train_workloads
    from bench.train_report import TrainRow, ratios

    s4 = next(w for w in train_workloads.WORKLOADS if w.key == "s4_catsdogs")

    def row(pipeline: str, device: str, seconds: float) -> TrainRow:
        records = [{"seconds": seconds, "val_accuracy": 0.5}] * 3  # 300 images an epoch
        return TrainRow(
            f"s4_catsdogs/{pipeline}/{device}", s4, pipeline, device, 1, 300, 150, records,
            1.0, 1.0, 1.0, None,
        )  # fmt: skip

    rows = [
        row("cnnlab", "cuda", 1.0),
        row("keras", "cuda", 20.0),  # 20x: below the 30x goal
        row("keras", "cpu", 100.0),  # another device: the CUDA row's peer is the GPU's Keras
        row("reference", "cuda", 1.05),  # cnnlab 1.05x: met
        row("synthetic", "cuda", 0.8),  # cnnlab 0.8x of the ceiling: missed
    ]
    found = {r.name: r for r in ratios(rows)}
    keras = found["s4_catsdogs: cnnlab cuda vs keras cuda, img/s"]
    assert keras.value == 20.0 and "goal ≥ 30x: NOT met" in keras.meaning
    assert "goal ≥ 0.9x: met" in found["s4_catsdogs: cnnlab cuda vs reference cuda, img/s"].meaning
    ceiling = found["s4_catsdogs: cnnlab cuda vs synthetic cuda, img/s"]
    assert ceiling.value == 0.8 and "goal ≥ 0.9x: NOT met" in ceiling.meaning
    assert not any("keras cpu" in name for name in found if "cuda" in name.split(" vs ")[0])
