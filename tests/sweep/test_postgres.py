"""Two `cnnlab sweep` processes, started together, sharing one study on a real PostgreSQL
server (as workers on two machines would): the study ends with exactly the trials asked for,
none lost, none run twice, each in its own run folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import optuna
from optuna.trial import TrialState

TRIALS = 6


def test_two_workers_sharing_postgresql_finish_each_trial_exactly_once(
    tmp_path, sweep_file, postgres_url
):
    path = sweep_file(tmp_path, name="shared", trials=TRIALS)
    env = {**os.environ, "CNNLAB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "cnnlab", "sweep", str(path), "--storage", postgres_url]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, **pipes) for _ in range(2)]
    outputs = [worker.communicate(timeout=400)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) == TRIALS
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    numbers = [trial.number for trial in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))  # distinct, none missing
    # both processes took trials, and every finished one has its own finished run folder
    assert all(re.search(r"^trial \d+: (complete|pruned|failed)", o, re.M) for o in outputs)
    folder = tmp_path / "runs" / "shared"
    runs = sorted(p.name for p in folder.glob("trial-*") if (p / "metrics.json").is_file())
    assert runs == sorted(f"trial-{t.number:04d}" for t in done)
    assert "optuna.db" not in os.listdir(folder)  # the shared storage, not a local file
    for output in outputs:
        assert "Sweep shared: " in output and "postgresql://postgres@/sweeps" in output
