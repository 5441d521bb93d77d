"""`python -m bench --quick`: every pipeline of every benchmark runs and gives a row."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"
CATS_VS_DOGS = DATASETS / "cats_vs_dogs"


def _import_bench() -> None:
    if str(REPO_ROOT) not in sys.path:  # bench/ is a top-level package beside src/
        sys.path.insert(0, str(REPO_ROOT))


def _require_dataset(require) -> None:
    for name in ("train.zip", "validation.zip"):
        require(CATS_VS_DOGS / name)  # skips locally, fails on CI, naming the path


def test_quick_benchmark_prints_and_writes_every_row(tmp_path, capsys, require):
    _require_dataset(require)
    _import_bench()
    from bench import decode_cache
    from bench.__main__ import main

    assert main(["decode_cache", "--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "| pipeline | images | seconds | img/s |" in printed
    saved = json.loads((tmp_path / "decode_cache.json").read_text(encoding="utf-8"))
    assert [row["key"] for row in saved["rows"]] == list(decode_cache.ROWS)
    for row in saved["rows"]:
        assert row["images"] > 0, row
        assert row["img_per_s"] > 0, row
        assert row["pipeline"] in printed
    assert [ratio["name"] for ratio in saved["ratios"]] == [
        "epoch from cache vs DataLoader epoch",
        "cold decode vs one DataLoader epoch",
    ]
    assert all(ratio["value"] > 0 for ratio in saved["ratios"])
    assert saved["pixels"]["max_abs_diff"] <= 1  # both pipelines decode and resize alike
    assert saved["machine"]["cpu_count"] >= 1 and saved["machine"]["torch"]
    assert (tmp_path / "decode_cache.md").read_text(encoding="utf-8") in printed


def test_quick_augment_benchmark_times_cnnlab_and_its_peers(tmp_path, capsys):
    """Needs no dataset: random images. Keras runs only where `make bench-env` was run."""
    _import_bench()
    import torch
    from bench import augment
    from bench.__main__ import main

    assert main(["--only", "augment", "--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "augment.json").read_text(encoding="utf-8"))
    rows = {row["key"]: row for row in saved["rows"]}
    not_run = {item["key"]: item["reason"] for item in saved["not_run"]}
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    assert saved["settings"]["devices"] == devices
    for shape in augment.SHAPES:
        tag = augment.shape_tag(shape)
        measured = [f"{tag}/cnnlab/{device}" for device in devices] + [f"{tag}/torchvision/cpu"]
        keras = f"{tag}/keras/cpu"
        if augment.BENCH_PYTHON.is_file():  # the bench env is there: Keras must have run
            measured.append(keras)
        else:
            assert not_run[keras] == "not run: make bench-env"
        for key in measured:
            assert rows[key]["images"] == augment.QUICK_IMAGES, key
            assert rows[key]["img_per_s"] > 0, key
        assert f"| {tag} | {augment.PIPELINES['cnnlab']} | cpu | 128 |" in printed
    ratios = {ratio["name"]: ratio["value"] for ratio in saved["ratios"]}
    assert ratios["28x28x1: cnnlab cpu vs torchvision"] > 0
    assert saved["machine"]["cpu_count"] >= 1 and saved["settings"]["cpu_threads"] == 2
    assert (tmp_path / "augment.md").read_text(encoding="utf-8") in printed
