"""A sweep file on scikit-learn's digits, and a throw-away PostgreSQL server for the test of
workers sharing one study."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import write_digits_config

# SGD with momentum 0.9 as the base, so no momentum and Nesterov are each valid alone;
# together they are an invalid combination a quarter of the random trials draw (they fail, the
# sweep goes on; TPE learns nothing from a failed trial, but it soon prefers momentum). lr over
# four decades: the lowest barely move in 3 epochs, so the median pruner stops them.
SPACE = {
    "train.optimizer.lr": {"type": "float", "low": 1.0e-5, "high": 0.3, "log": True},
    "train.optimizer.momentum": [0.0, 0.9],
    "train.optimizer.nesterov": [False, True],
}
BASE_SET = {
    "train.epochs": 3,
    "train.steps_per_epoch": 3,
    "train.optimizer.name": "sgd",
    "train.optimizer.momentum": 0.9,
    "evaluate.test": False,  # the sweep chooses on validation; a test pass per trial is waste
}


def write_sweep(root: Path, name: str = "sweep", **keys: Any) -> Path:
    """root/<name>.yaml over root/digits.yaml (the tiny digits experiment, its runs under
    root/runs); `keys` replace the sweep file's own."""
    root.mkdir(parents=True, exist_ok=True)
    experiment = write_digits_config(
        root / "digits.yaml", report={"interpret": False}, output={"dir": str(root / "runs")}
    )
    sweep = {
        "experiment": str(experiment),
        "set": BASE_SET,
        "space": SPACE,
        "pruner": {"name": "median", "startup_trials": 3},
        "trials": 4,
        **keys,
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sweep_file() -> Callable[..., Path]:
    """sweep_file(root, name="sweep", **keys): see write_sweep."""
    return write_sweep


# --- a real PostgreSQL server ----------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL cluster of Debian's binaries, listening on a unix socket in tmp
    only (no TCP), trust authentication, one database `sweeps`; its SQLAlchemy URL. Skips
    when PostgreSQL is not installed, but fails on CI, where .ci/run installs it."""
    binaries = _postgres_bin()
    if binaries is None:
        reason = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must provide it (.ci/run installs Debian's postgresql)")
        pytest.skip(f"{reason}; apt install postgresql")
    # initdb refuses to run as root: the cluster belongs to the postgres user, in a folder of
    # its own under /tmp (pytest's tmp_path is private to root)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="cnnlab-pg-"))
    data, sockets, port = root / "data", root / "sock", _free_port()
    sockets.mkdir()
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")

    def postgres(tool: str, *args: str, check: bool = True) -> None:
        command = [*as_postgres, str(binaries / tool), *args]
        subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    postgres("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-k {sockets} -p {port} -c listen_addresses='' -c fsync=off"
    log = str(root / "server.log")
    postgres("pg_ctl", "-D", str(data), "-o", options, "-l", log, "-w", "-t", "60", "start")
    try:
        postgres("createdb", "-h", str(sockets), "-p", str(port), "-U", "postgres", "sweeps")
        yield f"postgresql://postgres@/sweeps?host={sockets}&port={port}"
    finally:
        postgres("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
