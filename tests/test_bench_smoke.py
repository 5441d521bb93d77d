"""`python -m bench --quick`: every pipeline of every benchmark runs and gives a row."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"
CATS_VS_DOGS = DATASETS / "cats_vs_dogs"


def _require_dataset() -> None:
    needed = [CATS_VS_DOGS / name for name in ("train.zip", "validation.zip")]
    absent = [str(path) for path in needed if not path.is_file()]
    if not absent:
        return
    reason = f"benchmark data absent ({', '.join(absent)}); the bench needs the shared datasets"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI must run the bench smoke test")
    pytest.skip(reason)


def test_quick_benchmark_prints_and_writes_every_row(tmp_path, capsys):
    _require_dataset()
    if str(REPO_ROOT) not in sys.path:  # bench/ is a top-level package beside src/
        sys.path.insert(0, str(REPO_ROOT))
    from bench import decode_cache
    from bench.__main__ import main

    assert main(["--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0

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
