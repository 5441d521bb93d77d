"""One pipeline of the training benchmark in its own process, so its peak memory is its own:

    python -m bench.train_child JOB.json [JOB.json ...] --pipeline cnnlab|idiomatic|reference \
        --device cpu

Prints one JSON line on stdout per job (a full run gives each process one job): the per-epoch
seconds (training pass + validation pass) and validation accuracy, the model's parameter count,
the process's peak resident memory (VmHWM: `ru_maxrss` would also count the parent's memory,
which Linux carries across fork and exec) and its resident memory after the pipeline's imports
(VmRSS), and on CUDA the peak GPU memory torch allocated. DataLoader workers are processes of
their own and are not counted: they share the parent's pages copy-on-write.

cnnlab runs through its public API only: `cnnlab.config.Experiment` and
`cnnlab.runs.run_experiment` on the extracted data folder (decoded into the job's cache
beforehand, so decoding is not part of any epoch); its epochs come from the run's history.csv.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

PIPELINES = ("cnnlab", "idiomatic", "reference", "synthetic")


def limit_threads(threads: int) -> None:
    """Before torch starts its pools: the bench compares pipelines on the same cores."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)


def memory_mb(field: str) -> float:
    """A line of /proc/self/status in MB: VmHWM (peak resident memory of this process since
    its exec) or VmRSS (resident now); 0 where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


class TrainingPeak(threading.Thread):
    """The highest VmRSS until the run's history.csv holds every epoch: cnnlab's memory while it
    trains, apart from the evaluation of every split and the report run_experiment does after
    training (which Keras's fit does not). Sampled every 20 ms, so it can only under-read."""

    def __init__(self, history: Path, epochs: int):
        super().__init__(daemon=True)
        self.history, self.epochs = history, epochs
        self.peak, self.stopped = 0.0, threading.Event()

    def run(self) -> None:
        checks = 0
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, memory_mb("VmRSS"))
            checks += 1
            if checks % 10 == 0 and self._epochs_logged() >= self.epochs:
                return

    def _epochs_logged(self) -> int:
        try:
            return max(0, len(self.history.read_text(encoding="utf-8").splitlines()) - 1)
        except OSError:  # not written yet
            return 0


def run_cnnlab(job: dict[str, Any], device: str) -> dict[str, Any]:
    from rich.console import Console

    from cnnlab.config import Experiment
    from cnnlab.errors import CnnlabError
    from cnnlab.runs import run_experiment

    folder = Path(job["work"]) / f"cnnlab-{device}"
    watch = TrainingPeak(folder / "history.csv", job["epochs"])
    watch.start()
    try:
        train = job["cnnlab"]["train"] | {"device": device}
        cfg = Experiment.model_validate(job["cnnlab"] | {"train": train})
        result = run_experiment(cfg, folder, console=Console(file=io.StringIO()))
    except (CnnlabError, ValueError) as err:  # e.g. a model cnnlab cannot build yet
        return {"not_run": f"not run: cnnlab: {str(err).splitlines()[0]}"}
    finally:
        watch.stopped.set()
        watch.join()
    with open(folder / "history.csv", encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    sizes = result.manifest["data"]["split_sizes"]
    records = [
        {"seconds": float(row["seconds"]), "val_accuracy": float(row["val_accuracy"])}
        for row in history
    ]
    # cnnlab compiles before epoch 1 and leaves it out of the epoch's seconds; the reference
    # loop compiles inside its epoch 1, so count it there too (warm-up line, time to target)
    records[0]["seconds"] += result.manifest["timings"].get("compile_s", 0.0)
    return {
        "records": records,
        "params": result.manifest["model"]["total_params"],
        "train_images": sizes["train"],
        "val_images": sizes.get("val", 0),
        "versions": {"cnnlab": result.manifest["cnnlab"]},
        "train_rss_mb": watch.peak,
    }


def run_peer(job: dict[str, Any], pipeline: str, device: str) -> dict[str, Any]:
    import numpy as np
    import torch
    import torchvision

    from bench import train_peers

    arrays = {name: np.load(path) for name, path in job["arrays"].items()}
    if pipeline == "idiomatic":
        records, model = train_peers.run_idiomatic(job, arrays, torch.device(device))
    else:
        synthetic = pipeline == "synthetic"
        records, model = train_peers.run_reference(job, arrays, torch.device(device), synthetic)
    return {
        "records": records,
        "params": sum(p.numel() for p in model.parameters()),
        "train_images": len(arrays["y_train"]),
        "val_images": len(arrays["y_val"]),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", type=Path)
    parser.add_argument("--pipeline", choices=PIPELINES, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    jobs = [json.loads(path.read_text(encoding="utf-8")) for path in args.jobs]
    limit_threads(jobs[0]["threads"])
    import torch

    if args.pipeline == "cnnlab":  # each pipeline imports only what it uses, before the baseline
        import cnnlab.runs  # noqa: F401
    else:
        import bench.train_peers  # noqa: F401

    cuda = args.device.startswith("cuda")
    baseline = memory_mb("VmRSS")
    for job in jobs:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        if args.pipeline == "cnnlab":
            found = run_cnnlab(job, args.device)
        else:
            found = run_peer(job, args.pipeline, args.device)
        found |= {
            "workload": job["workload"],
            "pipeline": args.pipeline,
            "device": args.device,
            "rss_mb": memory_mb("VmHWM"),
            "import_rss_mb": baseline,
            "train_rss_mb": found.get("train_rss_mb") or memory_mb("VmHWM"),
            "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        }
        print(json.dumps(found), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
