"""What a tracked run does when MLflow cannot be used: a store it cannot reach or write, or
MLflow not installed, stops it before any data is read (exit 2, naming the key and the fix);
and an untracked run never imports MLflow."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from importlib.abc import MetaPathFinder
from pathlib import Path

import pytest
from tests.conftest import write_digits_config
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cnnlab_run(config: Path, runs: Path, *sets: str) -> tuple[int, str]:
    args = ["run", str(config), "--output", str(runs), *(f"--set={item}" for item in sets)]
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def test_a_tracking_server_that_does_not_answer_exits_2_before_any_data(tmp_path):
    pytest.importorskip("mlflow")
    config = write_digits_config(tmp_path / "digits.yaml")
    uri = f"http://127.0.0.1:{closed_port()}"
    code, output = cnnlab_run(config, tmp_path / "runs", f"tracking.mlflow.uri={uri}")
    assert code == 2, output
    assert f"tracking.mlflow.uri: {uri}: the MLflow store cannot be used" in output
    assert "no server answers" in output and "nothing was trained" in output
    assert "Traceback" not in output
    assert list((tmp_path / "runs").iterdir()) == []  # the run folder it made is gone again
    assert not (tmp_path / "cnnlab-cache").exists()  # no data was read


def test_a_sqlite_store_that_cannot_be_made_exits_2_naming_the_key(tmp_path):
    pytest.importorskip("mlflow")
    config = write_digits_config(tmp_path / "digits.yaml")
    (tmp_path / "afile").write_text("not a folder\n")
    uri = f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"
    code, output = cnnlab_run(config, tmp_path / "runs", f"tracking.mlflow.uri={uri}")
    assert code == 2, output
    assert f"tracking.mlflow.uri: {uri}: the MLflow store cannot be used" in output
    assert "cannot make" in output


class NoMlflow(MetaPathFinder):
    """As if MLflow were not installed: any import of it fails, and is counted."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "mlflow" or name.startswith("mlflow."):
            self.tried.append(name)
            raise ImportError(f"No module named {name!r}")


@pytest.fixture
def no_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[NoMlflow]:
    """MLflow unimportable for the test (and forgotten if an earlier test imported it; the
    modules come back after)."""
    for name in [n for n in sys.modules if n == "mlflow" or n.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    blocker = NoMlflow()
    monkeypatch.setattr(sys, "meta_path", [blocker, *sys.meta_path])
    yield blocker


def test_without_mlflow_installed_a_tracked_run_exits_2_with_the_install_command(
    tmp_path, no_mlflow
):
    config = write_digits_config(tmp_path / "digits.yaml", tracking={"mlflow": None})
    code, output = cnnlab_run(config, tmp_path / "runs")
    assert code == 2, output
    assert "tracking.mlflow: MLflow is not installed; pip install cnnlab[track]" in output
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_run_without_tracking_never_imports_mlflow(tmp_path, no_mlflow):
    config = write_digits_config(tmp_path / "digits.yaml", report={"interpret": False})
    result = cnnlab.run(config, output_dir=tmp_path / "runs", quiet=True)
    assert (result.folder / "metrics.json").is_file()
    assert not (result.folder / "tracking.json").exists()
    assert no_mlflow.tried == []  # not even an import that failed quietly
    assert not any(n == "mlflow" or n.startswith("mlflow.") for n in sys.modules)
