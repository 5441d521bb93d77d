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
