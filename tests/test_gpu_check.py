"""`make gpu-check` without CUDA: bench/gpu_check.sh says so and dry-runs its CPU-side steps (the
wheel list, the CUDA tests' collection, the benchmarks' command lines, the output folder), so the
command a GPU session runs first is known to work before the GPU is there."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from bench.train_workloads import WORKLOADS

ROOT = Path(__file__).resolve().parents[1]


def listed(name: str) -> list[str]:
    lines = (ROOT / "bench" / name).read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_without_cuda_the_check_says_so_and_dry_runs_its_cpu_side_steps(tmp_path):
    env = os.environ | {"PYTHON": sys.executable, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "gpu-check: no CUDA GPU here" in out
    assert f"wheel list: {len(listed('gpu_wheels.txt'))} pinned requirements parse" in out
    collected = re.search(r"CUDA tests: (\d+) tests collected .* from (\d+) files", out)
    assert collected, out
    assert int(collected[1]) > 100 and int(collected[2]) == len(listed("gpu_tests.txt"))
    planned = re.search(r"would run train: (.*) on cuda", out)
    assert planned and planned[1].split(", ") == [w.key for w in WORKLOADS], out
    assert "would run augment" in out
    assert f"output folder {tmp_path}: writable" in out
    assert "dry run passed" in out
    assert list(tmp_path.iterdir()) == []  # a dry run leaves nothing behind


def test_speed_recipe_runs_its_seeds_through_cnnlab_run_and_times_them_apart(tmp_path, require):
    """`python -m bench.gpu_speed` (the GPU's speed phase) on a CPU-sized cut of CIFAR-10."""
    data = ROOT.parent / "shared" / "datasets" / "cifar10"
    require(data / "train.zip")
    cut = ["--set", "data.max_per_class=10", "--set", "train.epochs=1"]
    command = [sys.executable, "-m", "bench.gpu_speed", "--data", str(data), "--seeds", "2"]
    done = subprocess.run(
        [*command, *cut, "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads((tmp_path / "speed.json").read_text(encoding="utf-8"))
    assert [row["seed"] for row in saved["rows"]] == [0, 1]
    for row in saved["rows"]:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["epochs"] == 1
        assert 0 < row["train_s"] < row["wall_s"] and row["data_s"] > 0
    assert "goal ≥ 90.8% in ≤ 3 s: NOT met" in done.stdout  # one epoch of 100 images


def test_speed_recipe_without_the_complete_cifar10_says_how_to_get_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_speed", "--data", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{tmp_path} lacks train.zip, test.zip: make speed-data" in done.stderr


def test_a_bad_speed_recipe_key_exits_2_naming_it_and_writes_nothing(tmp_path, require):
    data = ROOT.parent / "shared" / "datasets" / "cifar10"
    require(data / "train.zip")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bench.gpu_speed", "--data", str(data), "--dry-run"]
    done = subprocess.run(
        [*command, "--set", "train.epochz=3", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "train.epochz: unknown key; did you mean 'epochs'?" in done.stderr
    assert not out.exists()
