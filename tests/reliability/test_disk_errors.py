"""M2: a full disk, a read-only or forbidden place, a file where a folder belongs: exit 2 with
a message naming the path and the option or key that chose it, and no half-made run folder.

Tests run as root, where permissions stop no write, so each error is injected as the OSError
the system call raises; where this machine lets the test mount a small tmpfs (root, with
CAP_SYS_ADMIN), the read-only and the full disk are real too, and skipped elsewhere."""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.runs.test_trained import assert_user_error, run_cli

from cnnlab.atomic import atomic_folder, atomic_path, write_text

ORIGINAL_WRITE_TEXT = Path.write_text


def fail_writing(monkeypatch: pytest.MonkeyPatch, name: str, code: int) -> None:
    """Path.write_text of the temporary file of `name` raises `code` as write() does: with no
    file name (ENOSPC from a write on a full disk names none)."""

    def write_text_or_fail(self: Path, *args, **kwargs):
        if self.name.startswith(f".{name}."):
            raise OSError(code, os.strerror(code))
        return ORIGINAL_WRITE_TEXT(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text_or_fail)


def run_folders(runs: Path) -> list[Path]:
    return sorted(runs.iterdir()) if runs.exists() else []


def test_a_full_disk_while_writing_the_run_folder_exits_2_and_leaves_no_folder(
    tmp_path: Path, digits_yaml, monkeypatch: pytest.MonkeyPatch
):
    fail_writing(monkeypatch, "split.csv", errno.ENOSPC)
    result = run_cli("run", str(digits_yaml()))
    split = tmp_path / "runs" / "digits" / "split.csv"
    assert_user_error(
        result, f"cannot write {split} (set by output.dir): No space left on device", "free"
    )
    assert run_folders(tmp_path / "runs") == []  # the half-made folder is gone


def test_the_option_that_chose_the_place_is_named(
    tmp_path: Path, digits_yaml, monkeypatch: pytest.MonkeyPatch
):
    fail_writing(monkeypatch, "config.yaml", errno.EDQUOT)
    elsewhere = tmp_path / "elsewhere"
    result = run_cli("run", str(digits_yaml()), "--output", str(elsewhere))
    assert_user_error(result, f"{elsewhere / 'digits' / 'config.yaml'} (set by --output)")
    assert run_folders(elsewhere) == []


def test_a_read_only_output_folder_exits_2_naming_output_dir(
    tmp_path: Path, digits_yaml, monkeypatch: pytest.MonkeyPatch
):
    original = Path.mkdir
    runs = tmp_path / "runs"

    def read_only_mkdir(self: Path, *args, **kwargs):
        if self.parent == runs:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mkdir)
    result = run_cli("run", str(digits_yaml()))
    assert_user_error(
        result, "output.dir: cannot make the run folder", "(Read-only file system)", "--output"
    )
    assert run_folders(runs) == []


def test_another_os_error_is_a_bug_and_keeps_its_traceback(
    tmp_path: Path, digits_yaml, monkeypatch: pytest.MonkeyPatch
):
    fail_writing(monkeypatch, "split.csv", errno.EIO)
    result = run_cli("run", str(digits_yaml()))
    assert result.exit_code == 1
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.EIO
    assert run_folders(tmp_path / "runs") == []  # still no half-made folder


@pytest.mark.parametrize("where", ["itself", "above"])
def test_output_dir_a_file_exits_2_naming_output_dir(tmp_path: Path, digits_yaml, where: str):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n", encoding="utf-8")
    output = notes if where == "itself" else notes / "runs"
    result = run_cli("run", str(digits_yaml()), "--set", f"output.dir={output}")
    assert_user_error(result, f"output.dir: {output} is not a folder")
    assert notes.read_text(encoding="utf-8") == "mine\n"  # the file stays as it was


@pytest.mark.parametrize("name", ["a/b/c", "../escaped", "/tmp/absolute", "''", ".."])
def test_output_name_must_be_one_folder_name(tmp_path: Path, digits_yaml, name: str):
    result = run_cli("run", str(digits_yaml()), "--set", f"output.name={name}")
    assert_user_error(result, "output.name:", "must be one folder name")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs").exists()


def test_json_into_a_forbidden_place_exits_2_naming_the_file_and_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    target = tmp_path / "locked" / "report.json"
    original = tempfile.mkstemp

    def forbidden(*args, dir=None, prefix=None, **kwargs):  # mkstemp's own keywords
        if Path(dir) == target.parent:
            raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2.tmp")
        return original(*args, dir=dir, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", forbidden)
    result = run_cli("inspect", "digits", "--json", str(target))
    # the file asked for, not the hidden temporary one
    assert_user_error(result, f"cannot use {target} (set by --json): Permission denied")
    assert ".tmp" not in result.stderr


def test_an_atomic_write_names_the_file_asked_for(tmp_path: Path):
    target = tmp_path / "metrics.json"
    with pytest.raises(OSError) as caught, atomic_path(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() on a full disk
    assert caught.value.filename == str(target)
    with pytest.raises(OSError) as caught, atomic_folder(tmp_path / "eval") as temp:
        raise OSError(errno.ENOSPC, "No space left on device", str(temp / "metrics.json"))
    assert caught.value.filename == str(tmp_path / "eval" / "metrics.json")
    with pytest.raises(FileNotFoundError) as missing, atomic_path(target):
        (tmp_path / "absent" / "x").read_text()  # another file's error keeps its name
    assert missing.value.filename == str(tmp_path / "absent" / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left


# ---- real places, where this machine lets the test mount them ------------------------------


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount_tmpfs("size=16k,ro"): a tmpfs mounted with those options (skip if not allowed)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mount{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounted:
            subprocess.run(["umount", str(point)], check=False)


def test_a_real_read_only_place(tmp_path: Path, digits_yaml, mount_tmpfs):
    read_only = mount_tmpfs("size=1m,ro")
    result = run_cli("run", str(digits_yaml()), "--output", str(read_only / "runs"))
    assert_user_error(result, f"output.dir: cannot make {read_only / 'runs'}", "Read-only")
    result = run_cli("inspect", "digits", "--json", str(read_only / "report.json"))
    assert_user_error(result, f"cannot write {read_only / 'report.json'} (set by --json)")
    assert list(read_only.iterdir()) == []


def test_a_real_full_disk(tmp_path: Path, digits_yaml, mount_tmpfs):
    full = mount_tmpfs("size=16k")
    write_text(full / "filler", "x" * 4096)  # what was there stays
    result = run_cli("run", str(digits_yaml()), "--output", str(full))
    assert_user_error(result, f"cannot write {full / 'digits'}", "No space left on device")
    assert [p.name for p in full.iterdir()] == ["filler"]  # no run folder, no temporary file
