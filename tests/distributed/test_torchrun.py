"""`torchrun -m cnnlab run`: real torchrun launches of 2 processes (gloo, on the CPU) against
plain one-process runs of the same experiment.

The experiment: scikit-learn's digits, a small conv net without BatchNorm or Dropout, 3 epochs
of Adam in global batches of 49, train.deterministic, one thread per process. 49 is odd and the
training split holds 1,079 images (22 batches of 49 and a last one of 1): the processes take
slices of 24 and 25, and in each epoch's last step none and 1, so uneven and empty slices, and
their loss weighting, are in every comparison.

Tolerance: the two runs compute the same sums in another order. One process's backward adds
the 49 images' gradient terms in one reduction; under DDP each process adds its 24 or 25,
weights its mean by its share, and the all-reduce adds the two partial gradients and halves
them. float32 rounding then differs in the last bit or two of a gradient (~1e-7 relative) and
the steps carry it on: 3 epochs of Adam at lr 0.01 leave the weights 2e-7 apart and the losses
3e-9 (measured). The asserts allow 1e-5 for weights and losses, 50x that; a wrong slice, weight
or reduction moves them by 1e-3 or more. Accuracies may differ by one image, where a
probability sits on a tie. Where the order is the same, results are bitwise: a killed and
resumed 2-process run equals an uninterrupted one (same processes, same reductions), and a
1-process torchrun run a plain run (world size 1: its slice is the batch). BatchNorm (not in
this net) normalises each process's slice by the slice's own statistics unless
train.sync_batchnorm (CUDA only), so a BatchNorm network under DDP computes something close to,
but not the same as, one process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from safetensors.torch import load_file
from tests.conftest import write_digits_config

from cnnlab.train.checkpoint import read_checkpoint

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this PyTorch build",
)

EPOCHS, BATCH = 3, 49
TIMEOUT_S = 180
TOLERANCE = 1e-5  # weights and losses, see the module's docstring


def experiment(path: Path, dropout: float = 0.0) -> Path:
    layers = [
        {"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 2}},
        {"Flatten": {}},
        *([{"Dropout": dropout}] if dropout else []),
        {"Dense": {"units": 10, "activation": "softmax"}},
    ]
    train = {
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "optimizer": {"name": "adam", "lr": 0.01},  # ~0.93 test accuracy in 3 epochs
        "deterministic": True,
    }
    return write_digits_config(
        path, model={"layers": layers}, train=train, report={"interpret": False}
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(config: Path, output: Path, processes: int | None, *extra: str) -> list[str]:
    """`cnnlab run` in one plain process, or under torchrun with `processes`."""
    cnnlab = ["-m", "cnnlab", "run", str(config), f"--output={output}", *extra]
    if processes is None:
        return [sys.executable, *cnnlab]
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
    launcher += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    return [sys.executable, *launcher, *cnnlab]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # one thread in every process: CPU reductions are bitwise repeatable only at equal counts
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "OMP_NUM_THREADS": "1", "CNNLAB_CACHE": str(cache), "COLUMNS": "200"}


def launch(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> dict[str, Path]:
    """The experiment run in one process, and in two under torchrun; their folders."""
    root = tmp_path_factory.mktemp("torchrun")
    config = experiment(root / "digits.yaml")
    made = {}
    for name, processes in (("one", None), ("two", 2)):
        done = launch(command(config, root / name, processes), env)
        assert done.returncode == 0, done.stderr[-3000:]
        (root / f"{name}.out").write_text(done.stdout, encoding="utf-8")
        made[name] = root / name / "digits"
    return made


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def weights_apart(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def test_two_processes_give_the_one_process_result(runs: dict[str, Path]) -> None:
    one, two = metrics(runs["one"]), metrics(runs["two"])
    assert one.keys() == two.keys() == {"train", "val", "test"}
    for split in one:
        images = sum(map(sum, one[split]["confusion_matrix"]))
        assert two[split]["loss"] == pytest.approx(one[split]["loss"], abs=TOLERANCE)
        assert abs(two[split]["accuracy"] - one[split]["accuracy"]) <= 1 / images + 1e-12
    assert weights_apart(runs["one"], runs["two"]) <= TOLERANCE
    print(
        {s: (one[s]["accuracy"], two[s]["accuracy"], one[s]["loss"], two[s]["loss"]) for s in one},
        "max weight difference",
        weights_apart(runs["one"], runs["two"]),
    )


def test_rank_zero_alone_writes_and_prints(runs: dict[str, Path]) -> None:
    one, two = runs["one"], runs["two"]
    assert [p.name for p in two.parent.iterdir()] == ["digits"]  # no digits-2 from rank 1

    def files(folder: Path) -> set[str]:
        return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}

    assert files(two) == files(one)
    for name in ("config.yaml", "split.csv", "health.json", "summary.txt", "normalization.json"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    history = (two / "history.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in history] == ["epoch", "1", "2", "3"]
    manifest = json.loads((two / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["torchrun"] == {"world_size": 2, "backend": "gloo"}
    assert "torchrun" not in json.loads((one / "manifest.json").read_text(encoding="utf-8"))
    printed = (two.parent.parent / "two.out").read_text(encoding="utf-8")
    for line in ("Run folder:", "Epoch 1/3", "Epoch 3/3", "test accuracy:", "Report:"):
        assert printed.count(line) == 1, printed


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_killed_run_resumes_under_torchrun_to_the_uninterrupted_result(
    runs: dict[str, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL to the launcher and its workers (torch starts each worker in a session of its
    own, so the launcher's process group alone would leave them training) once the first
    checkpoint exists, then `torchrun ... --resume`: the weights and metrics of the run never
    interrupted, bitwise."""
    killed_and_resumed(experiment(tmp_path / "digits.yaml"), runs["two"], env, tmp_path)


def test_with_dropout_a_killed_run_resumes_to_the_uninterrupted_masks(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Dropout's masks come from (seed, epoch, rank) under torchrun (RankRandomness; that the
    processes' masks differ is tests/train/test_rank_randomness.py's): a killed and resumed
    2-process run draws the uninterrupted run's masks again, to the same weights, bitwise."""
    config = experiment(tmp_path / "digits.yaml", dropout=0.3)
    whole = launch(command(config, tmp_path / "whole", 2), env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed_and_resumed(config, tmp_path / "whole" / "digits", env, tmp_path)


def killed_and_resumed(config: Path, uninterrupted: Path, env: dict[str, str], tmp_path: Path):
    folder = tmp_path / "killed" / "digits"
    launcher = subprocess.Popen(
        command(config, tmp_path / "killed", 2),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (folder / "checkpoints" / "last.pt").exists():
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.002)
        workers = children(launcher.pid)
        os.killpg(launcher.pid, signal.SIGKILL)
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
    finally:
        launcher.kill()
        launcher.communicate()
    assert len(workers) == 2
    assert not (folder / "metrics.json").exists()  # killed before the run's end
    landed = read_checkpoint(folder / "checkpoints" / "last.pt")["state"]["epoch"]
    assert 1 <= landed < EPOCHS

    resumed = launch(command(config, tmp_path / "killed", 2, "--resume"), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Epoch {landed + 1}/3" in resumed.stdout and "Epoch 1/3" not in resumed.stdout
    assert weights_apart(folder, uninterrupted) == 0.0
    assert metrics(folder) == metrics(uninterrupted)
    history = [row.split(",")[:-1] for row in (folder / "history.csv").read_text().splitlines()]
    whole = (uninterrupted / "history.csv").read_text().splitlines()
    assert history == [row.split(",")[:-1] for row in whole]  # all but the seconds


def test_one_process_under_torchrun_is_bitwise_the_plain_run(
    runs: dict[str, Path], env: dict[str, str], tmp_path: Path
) -> None:
    """World size 1: DDP, the slices, the gathers and the all-reduces change no bit."""
    done = launch(command(experiment(tmp_path / "digits.yaml"), tmp_path, 1), env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert weights_apart(tmp_path / "digits", runs["one"]) == 0.0
    assert metrics(tmp_path / "digits") == metrics(runs["one"])


def test_a_batch_smaller_than_the_world_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    """A global batch the world size does not divide is split unevenly (the comparison above
    uses 49 over 2); one smaller than the world would leave processes without a sample in
    every step: refused before anything runs, naming the key and the world size."""
    config = experiment(tmp_path / "digits.yaml")
    done = launch(command(config, tmp_path / "runs", 2, "--set", "train.batch_size=1"), env)
    assert done.returncode == 1  # torchrun's own code when a process fails; its summary:
    assert "exitcode  : 2" in done.stderr  # the processes' user-error exit
    assert "error: train.batch_size: 1 is the global batch, split over the 2 processes" in (
        done.stderr
    )
    # no traceback of cnnlab's (torchrun prints its own, of the launcher)
    assert "cnnlab/cli.py" not in done.stderr and "cnnlab/runs/" not in done.stderr
    assert not (tmp_path / "runs").exists()
