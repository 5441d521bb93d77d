"""The public API: the README's "Python API" block runs as written, and `import cnnlab` offers
exactly what __all__ promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlab

ROOT = Path(__file__).resolve().parents[1]


def readme_api_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "README's Python API section has no ```python block"
    return found.group(1)


def test_the_readme_python_api_block_runs_as_written(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        exec(compile(readme_api_block(), "README.md", "exec"), {"__name__": "readme"})
    finally:
        torch.use_deterministic_algorithms(before)
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "epoch 1: loss" in printed
    assert "a white square is a" in printed
    assert (tmp_path / "runs" / "digits_basenet" / "report.html").is_file()


def test_every_public_name_resolves():
    for name in cnnlab.__all__:
        assert getattr(cnnlab, name) is not None, name
    with pytest.raises(AttributeError):
        cnnlab.no_such_name  # noqa: B018


def imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_import_cnnlab_loads_no_torch():
    assert "torch" not in imported_after("import cnnlab")


def test_starting_a_run_loads_no_heavy_library_it_does_not_use():
    # scikit-learn + scipy (70 MB, 1.5 s), kornia, timm, matplotlib: only where a run uses them
    loaded = imported_after("import cnnlab.cli, cnnlab.runs")
    assert not {"sklearn", "scipy", "kornia", "timm", "matplotlib"} & loaded
