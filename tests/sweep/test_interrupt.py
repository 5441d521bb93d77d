"""Ctrl-C in the middle of a trial: `cnnlab sweep` exits 130 saying how to continue, the trial
is recorded (FAIL, interrupted, not a failure of the sweep), its run folder kept as an
interrupted run, and the report written with what the storage holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState


def test_ctrl_c_records_the_trial_writes_the_report_and_exits_130(tmp_path, sweep_file):
    slow = {"train.epochs": 30, "train.steps_per_epoch": 40, "train.optimizer.name": "sgd",
            "train.optimizer.momentum": 0.9, "evaluate.test": False}  # fmt: skip
    path = sweep_file(tmp_path, name="stopped", trials=3, set=slow)
    env = {**os.environ, "CNNLAB_CACHE": str(tmp_path / "cache")}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "sweep", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    folder = tmp_path / "runs" / "stopped"
    history = folder / "trial-0000" / "history.csv"
    deadline = time.monotonic() + 240
    while not history.is_file() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first epoch of the first trial is done
    assert history.is_file(), sweep.communicate()
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=120)

    assert sweep.returncode == 130, err
    assert "interrupted with 0 of 3 trials finished" in err
    assert "run the same command again to continue" in err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="stopped", storage=f"sqlite:///{folder}/optuna.db")
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] is True
    assert trial.user_attrs["error"].startswith("interrupted (Ctrl-C) after epoch")
    assert (folder / "trial-0000" / "checkpoints").is_dir()  # the run can still be resumed
    found = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    assert found["counts"]["fail"] == 1 and found["counts"]["finished"] == 0
    assert (folder / "sweep.html").is_file()
