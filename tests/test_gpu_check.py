"""`make gpu-check` without CUDA: bench/gpu_check.sh says so and dry-runs its CPU-side steps (the
wheel list, the CUDA tests' collection, the benchmarks' command lines, the output folder), so the
command a GPU session runs first is known to work before the GPU is there."""

from __future__ import annotations

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
