"""What every benchmark shares: timing, rows, machine facts, and the Markdown/JSON output."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from cnnlab.atomic import write_text

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"
DEFAULT_OUT = REPO_ROOT / "bench" / "out"
BENCH_PYTHON = REPO_ROOT / ".venv-bench" / "bin" / "python"  # Keras peers (`make bench-env`)


def timed(work: Callable[[], T]) -> tuple[float, T]:
    """Seconds `work()` took (time.perf_counter), and what it returned."""
    start = time.perf_counter()
    value = work()
    return time.perf_counter() - start, value


@dataclass
class Row:
    key: str  # stable identifier, for tests and the JSON
    pipeline: str  # what the table shows
    images: int  # per run
    runs: list[float] = field(default_factory=list)  # seconds of each repeat

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "pipeline": self.pipeline,
            "images": self.images,
            "seconds": self.seconds,
            "img_per_s": self.img_per_s,
            "runs": self.runs,
        }


@dataclass
class Ratio:
    name: str
    value: float  # img/s of the first pipeline divided by img/s of the second
    meaning: str


def machine_info() -> dict[str, Any]:
    import numpy
    import PIL
    import torch
    import torchvision

    import cnnlab

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity) if affinity is not None else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "numpy": numpy.__version__,
        "cnnlab": cnnlab.__version__,
        "start_method": torch.multiprocessing.get_start_method(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name(devices: tuple[str, ...]) -> str | None:
    """The GPU's name when a run includes CUDA rows (torch imported only then)."""
    if "cuda" not in devices:
        return None
    import torch

    return torch.cuda.get_device_name()


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine inflates every timing."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def busy_warning(load_before: float | None, cpus: int | None) -> str:
    """A warning line when the machine was not idle as the run began, else ''."""
    if load_before is None or load_before < 0.5 * (cpus or 1):
        return ""
    return (
        f"**Warning: the machine was busy (1-minute load average {load_before:.2f} on "
        f"{cpus} CPUs as the run began): timings are inflated; rerun when it is idle.**"
    )


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['cpu_count']} CPUs ({machine['cpus_usable']} usable, {machine['cpu_model']}), "
        f"Python {machine['python']}, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), torchvision {machine['torchvision']}, "
        f"Pillow {machine['pillow']}, numpy {machine['numpy']}, cnnlab {machine['cnnlab']}, "
        f"worker start method {machine['start_method']}; {machine['platform']}"
    )


def keras_line(peer: dict[str, Any]) -> str:
    """The Keras peer's versions, as a sentence part; `peer` is empty when it did not run."""
    if not peer:
        return "Keras not run"
    return (
        f"Keras {peer['keras']} (TensorFlow {peer.get('tensorflow', 'absent')}, numpy "
        f"{peer['numpy']}, scipy {peer['scipy']}; {peer['generator']})"
    )


def rows_table(rows: list[Row]) -> str:
    lines = ["| pipeline | images | seconds | img/s |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row.pipeline} | {row.images:,} | {row.seconds:.3f} | {row.img_per_s:,.1f} |"
        )
    return "\n".join(lines)


def ratios_table(ratios: list[Ratio]) -> str:
    lines = ["| ratio | value | meaning |", "|---|---:|---|"]
    lines += [f"| {r.name} | {r.value:.2f}x | {r.meaning} |" for r in ratios]
    return "\n".join(lines)


def write_outputs(out_dir: Path, name: str, markdown: str, payload: dict[str, Any]) -> list[Path]:
    """`<name>.md` and `<name>.json` in out_dir, each written atomically."""
    md, js = out_dir / f"{name}.md", out_dir / f"{name}.json"
    write_text(md, markdown)
    write_text(js, json.dumps(payload, indent=2) + "\n")
    return [md, js]


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)


def extract_subset(
    archive: Path, target: Path, per_class: int | None = None, pattern: str | None = None
) -> None:
    """The files of `archive` under `target`; with `per_class`, only the first that many (by
    name) of each folder (and of each `pattern` group 1 within it, for labels in file names).
    Names that would leave `target` are refused."""
    with zipfile.ZipFile(archive) as bundle:
        for member in _chosen(bundle, per_class, pattern):
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise ValueError(
                    f"refusing to extract {member.filename!r} from {archive}: it leaves the "
                    "target folder"
                )
            path = target.joinpath(*name.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as source, open(path, "wb") as sink:
                shutil.copyfileobj(source, sink)


def _chosen(
    bundle: zipfile.ZipFile, per_class: int | None, pattern: str | None
) -> list[zipfile.ZipInfo]:
    files = sorted((m for m in bundle.infolist() if not m.is_dir()), key=lambda m: m.filename)
    if per_class is None:
        return files
    taken: dict[tuple[str, str], int] = defaultdict(int)
    chosen = []
    for member in files:
        path = PurePosixPath(member.filename)
        found = re.search(pattern, path.name) if pattern else None
        group = (str(path.parent), found.group(1) if found else "")
        if taken[group] < per_class:
            taken[group] += 1
            chosen.append(member)
    return chosen
