"""`python -m bench.gpu_data [--datasets DIR] [--out .gpu-data]`: the zips the GPU benchmark
subset reads, packed small enough to travel to the lent GPU machine (`make gpu-data`).

The device tool sends the repository alone (64 MiB with the carried folders), never the
../shared/datasets beside it, and CIFAR-10's train.zip (52 MB) would not fit. So each zip a
training workload reads is written again holding only the files that workload extracts (its
full size, chosen by `bench.common`'s own rule: the first files by name of each class), byte for
byte: `python -m bench --datasets .gpu-data` then trains on exactly the pixels it would train on
from the full copy. A zip every file of which is read is copied as it is.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

from bench.common import DATASETS, REPO_ROOT, _chosen
from bench.train_workloads import WORKLOADS, Workload

DEFAULT_OUT = REPO_ROOT / ".gpu-data"


def pack(datasets: Path, out: Path, workloads: tuple[Workload, ...] = WORKLOADS) -> list[Path]:
    """Write every zip `workloads` read under `out/<dataset>/`; returns the files written."""
    wanted: dict[Path, set[str] | None] = {}  # zip -> member names (None: all of them)
    for workload in workloads:
        for name in workload.zips:
            archive = datasets / workload.dataset / name
            if not archive.is_file():
                raise FileNotFoundError(f"{archive} is missing (the shared datasets folder)")
            per_class = workload.full.per_class
            if per_class is None:
                wanted[archive] = None
            elif wanted.get(archive, set()) is not None:
                with zipfile.ZipFile(archive) as bundle:
                    members = _chosen(bundle, per_class, workload.data.get("label_pattern"))
                wanted[archive] = (wanted.get(archive) or set()) | {m.filename for m in members}
    written = []
    for archive, names in sorted(wanted.items()):
        target = out / archive.parent.name / archive.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if names is None:
            shutil.copyfile(archive, target)
        else:
            with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as sink:
                for member in source.infolist():
                    if member.filename in names:  # stored as they were: the same bytes
                        sink.writestr(member, source.read(member), member.compress_type)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_data", description=__doc__)
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        written = pack(args.datasets, args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = sum(path.stat().st_size for path in written)
    for path in written:
        print(f"{path}  {path.stat().st_size / 2**20:.1f} MiB")
    print(f'{total / 2**20:.1f} MiB in {args.out}; carry it to the GPU run (carry: [".gpu-data"])')
    return 0


if __name__ == "__main__":
    sys.exit(main())
