"""`python -m bench.gpu_rows [python -m bench's flags] [--dry-run]`: the benchmarks' CUDA rows,
for bench/gpu_check.sh on the lent GPU machine.

`python -m bench --device cuda` adds the CUDA rows to the CPU ones, and the training
benchmark's CPU rows (S4, S1 and S3 with every peer on 2 cores, about 18 minutes) do not fit in
a GPU lease. This runs the same `train.run` with the CUDA rows alone, and `augment.run` as
`--device cuda` runs it (its CPU rows take seconds; they are the ratios' denominators). The
flags are `python -m bench`'s, checked by its own parser, except that the device is CUDA.
`--dry-run` checks the flags, the data and the output folder and prints the plan, without CUDA.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from bench import augment, train, train_workloads
from bench.__main__ import parse_args


def plan(args: argparse.Namespace) -> list[str]:
    lines = []
    for name in args.benchmarks:
        if name == "train":
            keys = ", ".join(w.key for w in args.workloads)
            lines.append(
                f"train: {keys} on cuda (cnnlab, Keras 3 on PyTorch + ImageDataGenerator where the "
                "model is a Keras layer list, DataLoader, hand-written loop, and for ResNet-50 "
                "the synthetic-data ceiling)"
            )
        elif name == "augment":
            lines.append(
                "augment: cnnlab cpu + cuda, torchvision cpu, Keras cpu (where .venv-bench is)"
            )
        else:
            lines.append(f"{name}: not a GPU benchmark, left out")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--dry-run" in argv
    args = parse_args([a for a in argv if a != "--dry-run"] + ["--device", "cpu"])
    if not dry_run and not torch.cuda.is_available():
        print("error: CUDA is not available here (--dry-run checks the rest)", file=sys.stderr)
        return 2
    if "train" in args.benchmarks:
        absent = train_workloads.missing(args.datasets, args.workloads)
        if absent and not dry_run:
            print(f"error: missing {', '.join(map(str, absent))}", file=sys.stderr)
            return 2
        for path in absent:
            print(f"data: {path} is missing (make gpu-data, then carry .gpu-data)")
    args.out.mkdir(parents=True, exist_ok=True)
    tempfile.NamedTemporaryFile(dir=args.out).close()  # writable, or OSError here
    for line in plan(args):
        print(("would run " if dry_run else "running ") + line)
    if dry_run:
        print(f"output folder {args.out}: writable")
        return 0
    for name in args.benchmarks:
        if name == "train":
            made = train.run(
                args.datasets,
                args.out,
                quick=args.quick,
                devices=("cuda",),
                workloads=args.workloads,
            )
            text, files = made.markdown, made.files
        elif name == "augment":
            done = augment.run(
                args.out, repeats=args.repeats, quick=args.quick, devices=("cpu", "cuda")
            )
            text, files = done.markdown, done.files
        else:
            continue
        print(text)
        print("wrote " + ", ".join(str(path) for path in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
