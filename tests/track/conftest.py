"""One MLflow SQLite store for all the tracking tests, at the default place of the runs made
under `tracked_root/runs`: a new store's tables take MLflow's migrations seconds to make, so
once here instead of once a test. Each test keeps to its own experiment (or study) in it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tracked_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose runs/mlflow.db is a ready store (made by cnnlab.track's connect)."""
    pytest.importorskip("mlflow")
    from cnnlab.track.store import connect, default_uri

    root = Path(tmp_path_factory.mktemp("tracked"))
    connect(default_uri(root / "runs"))
    return root


@pytest.fixture(scope="session")
def shared_store(tracked_root: Path) -> str:
    """The URI of that store, for the tests that name it (tracking.mlflow.uri)."""
    from cnnlab.track.store import default_uri

    return default_uri(tracked_root / "runs")
