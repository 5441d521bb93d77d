"""M5 and M6: `--resume` of a run killed before its first checkpoint starts it again in its
folder, saying so; a resume that fails on its checkpoint rewrites none of the run's files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.runs.test_trained import assert_user_error, run_cli

RECORD = ("config.yaml", "health.json", "split.csv", "normalization.json", "summary.txt")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, train_digits) -> Path:
    """One finished digits run of digits_yaml's experiment (copied by each test)."""
    return train_digits(tmp_path_factory.mktemp("finished"), report={"interpret": False})


def killed_copy(finished: Path, runs: Path, keep: tuple[str, ...]) -> Path:
    """The run folder as a kill before the first checkpoint leaves it: only `keep`."""
    folder = runs / "digits"
    shutil.copytree(finished, folder)
    for path in folder.iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return folder


def test_a_run_killed_in_its_first_epoch_resumes_from_the_beginning(
    tmp_path, finished, digits_yaml
):
    # a kill after epoch 1's weights and history, before its checkpoint
    kept = (*RECORD, "model.safetensors", "history.csv")
    folder = killed_copy(finished, tmp_path / "runs", kept)
    (folder / ".model.safetensors.x1y2.tmp").write_bytes(b"half a file")

    result = run_cli("run", str(digits_yaml()), "--resume")

    assert result.exit_code == 0, result.output
    assert "has no checkpoint" in result.output and "from the beginning" in result.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["digits"]  # no digits-2
    assert (folder / "checkpoints" / "last.pt").is_file() and (folder / "metrics.json").is_file()
    assert not list(folder.glob(".*.tmp"))
    # the same run as one never interrupted (seeded, on the CPU)
    assert (folder / "model.safetensors").read_bytes() == (
        finished / "model.safetensors"
    ).read_bytes()


def test_a_run_killed_while_reading_its_data_resumes_from_the_beginning(tmp_path, digits_yaml):
    folder = tmp_path / "runs" / "digits"
    folder.mkdir(parents=True)
    (folder / ".config.yaml.a1b2.tmp").write_text("seed: 0\ndat", encoding="utf-8")

    result = run_cli("run", str(digits_yaml()), "--resume")

    assert result.exit_code == 0, result.output
    assert "from the beginning" in result.output
    assert (folder / "metrics.json").is_file() and not list(folder.glob(".*.tmp"))


def test_resuming_a_folder_that_is_no_run_is_refused(tmp_path, digits_yaml):
    folder = tmp_path / "runs" / "digits"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n", encoding="utf-8")

    result = run_cli("run", str(digits_yaml()), "--resume")

    assert_user_error(result, "holds no run to resume", "config.yaml is missing")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_resume_failing_on_its_checkpoint_rewrites_no_file(tmp_path, finished, digits_yaml):
    folder = tmp_path / "runs" / "digits"
    shutil.copytree(finished, folder)
    (folder / "checkpoints" / "last.pt").write_bytes(b"\x00 a damaged checkpoint")
    before = {name: (folder / name).read_bytes() for name in RECORD}

    result = run_cli("run", str(digits_yaml()), "--resume", "--set", "train.epochs=2")

    assert_user_error(result, "last.pt")
    assert {name: (folder / name).read_bytes() for name in RECORD} == before
