"""M3, M4, M8 and the source's low and rough edges: a zoo of bad sources through `cnnlab inspect`
and `cnnlab run` in this process. Each bad entry is named as skipped with its reason, used
(non-UTF-8 names, symlinked class folders), listed as ignored (README), or the command exits 2
naming the problem; never a traceback, and no member is read whole before its size is known."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from tests.conftest import image_bytes
from tests.runs.test_trained import assert_user_error, experiment_file, run_cli

from cnnlab.data import tree

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="symlinks, FIFOs and byte file names as Linux has them"
)


def pets(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """cats/ and dogs/ of distinct real 8x8 PNGs."""
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            seed += 1
            (root / label / f"{label}_{k}.png").write_bytes(image_bytes(seed=seed))
    return root


def inspect(source: Path, out: Path) -> tuple[Result, dict[str, Any]]:
    """`cnnlab inspect SOURCE --json OUT`: it succeeds, and its report."""
    result = run_cli("inspect", str(source), "--json", str(out))
    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback" not in result.output
    return result, json.loads(out.read_text(encoding="utf-8"))


def reasons(report: dict[str, Any], root: Path) -> dict[str, str]:
    prefix = f"{root}/"
    return {s["path"].removeprefix(prefix): s["reason"] for s in report["skipped"]}


def run_on(tmp_path: Path, folder: Path, classes: int = 2, **data: Any) -> Result:
    """`cnnlab run` of one epoch of a tiny network on `folder` at 8x8."""
    layers = [{"Flatten": {}}, {"Dense": {"units": classes, "activation": "softmax"}}]
    config = experiment_file(
        tmp_path / "exp.yaml",
        folder,
        layers,
        data={"target_size": [8, 8], **data},
        train={"epochs": 1},
        output={"dir": str(tmp_path / "runs")},
        report={"interpret": False},
    )
    return run_cli("run", str(config))


def health(tmp_path: Path) -> dict[str, Any]:
    (found,) = (tmp_path / "runs").glob("*/health.json")
    return json.loads(found.read_text(encoding="utf-8"))


# --- M3, M4: symlinks, pipes and file names in a folder ----------------------------------


def symlink_zoo(root: Path) -> Path:
    """pets/ with every kind of link and entry that once crashed the scan or vanished."""
    pets(root)
    cats = root / "cats"
    (cats / "broken.png").symlink_to("gone.png")
    (cats / "self.png").symlink_to("self.png")
    (cats / "ping.png").symlink_to("pong.png")
    (cats / "pong.png").symlink_to("ping.png")
    (cats / "here").symlink_to(".")
    (root / "dogs" / "up").symlink_to("..")
    os.mkfifo(cats / "pipe.png")  # reading it would block forever
    (cats / "zero.png").symlink_to("/dev/zero")  # reading it would never end
    return root


SYMLINK_REASONS = {
    "cats/broken.png": "broken symlink (-> gone.png, which does not exist)",
    "cats/self.png": "symlink loop (-> self.png never reaches a file)",
    "cats/ping.png": "symlink loop (-> pong.png never reaches a file)",
    "cats/pong.png": "symlink loop (-> ping.png never reaches a file)",
    "cats/pipe.png": "not a regular file (a device or pipe)",
    "cats/zero.png": "not a regular file (a device or pipe)",
}


def test_broken_and_looping_symlinks_pipes_and_devices_are_named_as_skipped(tmp_path):
    root = symlink_zoo(tmp_path / "pets")
    result, report = inspect(root, tmp_path / "report.json")
    found = reasons(report, root)
    loops = {path: found.pop(path) for path in ("cats/here/", "dogs/up/")}
    assert found == SYMLINK_REASONS
    assert loops == {
        "cats/here/": f"symlink loop (leads back to {root.resolve()}/cats)",
        "dogs/up/": f"symlink loop (leads back to {root.resolve()})",
    }
    assert report["classes"] == {"cats": 4, "dogs": 4}
    assert "skipped 8 files: 5 symlink loop, 2 not a regular file, 1 broken symlink" in (
        " ".join(result.output.split())
    )
    assert f"{root}/cats/self.png: symlink loop" in result.output


def test_a_symlinked_class_folder_is_followed_and_counted(tmp_path):
    root = pets(tmp_path / "pets")
    elsewhere = pets(tmp_path / "elsewhere", seed=50) / "cats"
    (root / "birds").symlink_to(elsewhere, target_is_directory=True)
    _, report = inspect(root, tmp_path / "report.json")
    # torchvision's ImageFolder follows it too; nothing of it is dropped or skipped.
    assert report["classes"] == {"birds": 4, "cats": 4, "dogs": 4}
    assert report["skipped"] == [] and report["empty_classes"] == []


def test_file_and_folder_names_that_are_not_utf8_are_used_and_shown_escaped(tmp_path):
    root = pets(tmp_path / "pets")
    raw = os.fsencode(root)
    with open(raw + b"/cats/caf\xe9.png", "wb") as handle:
        handle.write(image_bytes(seed=90))
    os.mkdir(raw + b"/\xe9t\xe9")
    for k in range(3):
        with open(raw + b"/\xe9t\xe9/%d.png" % k, "wb") as handle:
            handle.write(image_bytes(seed=91 + k))
    result, report = inspect(root, tmp_path / "report.json")
    assert report["classes"] == {"\\xe9t\\xe9": 3, "cats": 5, "dogs": 4}
    assert report["skipped"] == []
    shown = [p for group in report["duplicates"] for p in group["paths"]] + [result.output]
    assert "\\xe9t\\xe9" in result.output and not any("\udce9" in text for text in shown)


def test_run_trains_on_a_folder_of_bad_links_and_byte_names_naming_each_in_health_json(tmp_path):
    root = symlink_zoo(tmp_path / "pets")
    with open(os.fsencode(root) + b"/dogs/caf\xe9.png", "wb") as handle:
        handle.write(image_bytes(seed=90))
    # a symlinked class folder whose name is not UTF-8 either
    os.symlink(pets(tmp_path / "more", seed=50) / "cats", os.fsencode(root) + b"/\xe9t\xe9")
    result = run_on(tmp_path, root, classes=3, validation_split=0.25)
    assert result.exit_code == 0, result.output
    report = health(tmp_path)
    assert report["classes"] == {"\\xe9t\\xe9": 4, "cats": 4, "dogs": 5}
    assert set(reasons(report, root)) == {*SYMLINK_REASONS, "cats/here/", "dogs/up/"}
    (split_csv,) = (tmp_path / "runs").glob("*/split.csv")
    paths = [row["path"] for row in csv.DictReader(split_csv.open(encoding="utf-8"))]
    assert f"{root}/dogs/caf\\xe9.png" in paths


# --- M8 and traversal: zips --------------------------------------------------------------


def patched(raw: bytes, name: str, offset: int, fmt: str, value: int) -> bytes:
    """`raw` with one field of `name`'s central-directory header set to `value`: a zip whose
    header says what its maker wants, as a hostile one does."""
    start = raw.index(b"PK\x01\x02")
    while True:
        (length,) = struct.unpack_from("<H", raw, start + 28)
        if raw[start + 46 : start + 46 + length] == name.encode():
            out = bytearray(raw)
            struct.pack_into(fmt, out, start + offset, value)
            return bytes(out)
        start = raw.index(b"PK\x01\x02", start + 4)


FLAGS, METHOD, SIZE = 8, 10, 24  # offsets in a central-directory header


def hostile_zip(path: Path) -> Path:
    """Good cats/ and dogs/, and every member a zip can lie with or escape by."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for k in range(4):
            out.writestr(f"cats/c{k}.png", image_bytes(seed=k + 1))
            out.writestr(f"dogs/d{k}.png", image_bytes(seed=k + 11))
        for name in ("/abs/x.png", "C:\\x.png", "C:/y.png", "../up.png", "cats/../../evil.png"):
            out.writestr(name, image_bytes(seed=30))
        out.writestr("cats//double.png", image_bytes(seed=31))
        for name in ("cats/bomb.png", "cats/locked.png", "cats/deflate64.png"):
            out.writestr(name, image_bytes(seed=32))
    raw = patched(buffer.getvalue(), "cats/bomb.png", SIZE, "<I", 2**31)  # declares 2 GiB
    raw = patched(raw, "cats/locked.png", FLAGS, "<H", 0x1)
    raw = patched(raw, "cats/deflate64.png", METHOD, "<H", 9)
    path.write_bytes(raw)
    return path


HOSTILE_REASONS = {
    "/abs/x.png": "absolute path in the zip (path traversal)",
    "C:/x.png": "absolute path in the zip (path traversal)",
    "C:/y.png": "absolute path in the zip (path traversal)",
    "../up.png": "'..' in its path in the zip (path traversal)",
    "cats/../../evil.png": "'..' in its path in the zip (path traversal)",
    "cats//double.png": "empty or '.' folder name in its path in the zip",
    "cats/bomb.png": "zip bomb (declares 2,147,483,648 bytes, more than 1,073,741,824, the "
    "largest image file cnnlab reads)",
    "cats/locked.png": "encrypted in the zip (password-protected)",
    "cats/deflate64.png": "unreadable compression in the zip (method 9)",
}


def test_absolute_traversing_bomb_and_locked_zip_members_are_named_never_classes(tmp_path):
    archive = hostile_zip(tmp_path / "hostile.zip")
    result, report = inspect(archive, tmp_path / "report.json")
    assert reasons(report, archive) == HOSTILE_REASONS
    assert report["classes"] == {"cats": 4, "dogs": 4}  # no class '', 'C:' or '..'
    assert f"{archive}/cats/bomb.png: zip bomb" in result.output


def test_a_deflate_bomb_is_refused_by_its_ratio_before_a_byte_is_unpacked(tmp_path, monkeypatch):
    # 8 MiB of zeros in 8 KiB: the 2 MB -> 2 GiB bomb, at 1/256 the size, with the
    # floor lowered to match (the real floor, 64 MiB, would take a 64 MiB test).
    monkeypatch.setattr(tree, "BOMB_FLOOR", 2**20)
    archive = pets(tmp_path / "pets")
    zipped = tmp_path / "pets.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as out:
        for image in sorted(archive.rglob("*.png")):
            out.write(image, image.relative_to(archive).as_posix())
        out.writestr("dogs/bomb.png", bytes(8 * 2**20))
    unpacked: list[int] = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile,
        "open",
        lambda self, name, *a, **k: unpacked.append(1) or real_open(self, name, *a, **k),
    )
    _, report = inspect(zipped, tmp_path / "report.json")
    (reason,) = reasons(report, zipped).values()
    assert (
        reason.startswith("zip bomb (declares 8,388,608 bytes from ") and ":1, over 100:1" in reason
    )
    assert len(unpacked) == 8  # the eight images; the bomb never opened
    with pytest.raises(OSError, match="zip bomb"):
        tree.Tree(str(zipped), is_zip=True).read("dogs/bomb.png")


def test_a_member_whose_header_understates_its_size_reads_no_more_and_fails_the_run(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for k in range(4):
            out.writestr(f"cats/c{k}.png", image_bytes(seed=k + 1))
            out.writestr(f"dogs/d{k}.png", image_bytes(seed=k + 11))
        out.writestr("dogs/liar.png", bytes(2**20))  # 1 MiB, which the header calls 64 bytes
    archive = tmp_path / "liar.zip"
    archive.write_bytes(patched(buffer.getvalue(), "dogs/liar.png", SIZE, "<I", 64))
    with pytest.raises(OSError, match="Bad CRC-32"):
        tree.Tree(str(archive), is_zip=True).read("dogs/liar.png")
    result = run_on(tmp_path, archive, validation_split=0.25)
    assert_user_error(result, "1 of 9 files cannot be used", f"{archive}/dogs/liar.png")
    assert "corrupt in the zip" in result.stderr


def test_a_zip_with_windows_separators_is_read_as_folders(tmp_path):
    archive = tmp_path / "windows.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for k in range(3):
            out.writestr(f"cats\\c{k}.png", image_bytes(seed=k + 1))
            out.writestr(f"dogs\\d{k}.png", image_bytes(seed=k + 11))
    _, report = inspect(archive, tmp_path / "report.json")
    assert report["classes"] == {"cats": 3, "dogs": 3} and report["skipped"] == []


def test_a_zip_whose_directory_is_corrupt_exits_2_naming_it(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("cats/c.png", image_bytes())
    raw = buffer.getvalue().replace(b"PK\x01\x02", b"PK\x09\x09")  # central directory gone
    archive = tmp_path / "broken.zip"
    archive.write_bytes(raw)
    result = run_cli("inspect", str(archive))
    assert_user_error(result, f"{archive}: not a readable zip archive", "zip it again")


# --- the format allow-list ---------------------------------------------------------------


def fits_bytes() -> bytes:
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   = 2"]
    cards += ["NAXIS1  =                  200", "NAXIS2  =                  200", "END"]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode("ascii")
    return header + bytes(2880 * 14)  # 200x200 bytes of pixels, in 2880-byte blocks


def test_files_of_formats_cnnlab_does_not_decode_are_bad_files_naming_the_format(tmp_path):
    root = pets(tmp_path / "pets")
    (root / "cats" / "sky.png").write_bytes(fits_bytes())  # astronomy, named .png
    (root / "dogs" / "layers.jpg").write_bytes(b"8BPS\x00\x01" + bytes(40))  # Photoshop
    (root / "dogs" / "ink.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n" + bytes(40))
    _, report = inspect(root, tmp_path / "report.json")
    assert reasons(report, root) == {
        "cats/sky.png": "unsupported image format FITS",
        "dogs/layers.jpg": "unsupported image format PSD",
        "dogs/ink.jpg": "unsupported image format EPS",
    }


# --- data.source: "" and the rough edges ---------------------------------------------------


def test_an_empty_source_exits_2_naming_data_source_instead_of_scanning_here(tmp_path):
    result = run_on(tmp_path, tmp_path, source="")
    assert_user_error(result, "data.source: '': is empty")
    assert not (tmp_path / "runs").exists()
    assert_user_error(run_cli("inspect", ""), "source: '': is empty")


def test_readme_and_other_text_files_are_ignored_and_one_bad_file_is_one_file(tmp_path):
    root = pets(tmp_path / "pets")
    (root / "README.md").write_text("# pets\n", encoding="utf-8")
    (root / "LICENSE").write_text("CC-BY\n", encoding="utf-8")
    (root / "labels.csv").write_text("path,label\n", encoding="utf-8")
    (root / "cats" / "notes.txt").write_text("the grey one is a dog\n", encoding="utf-8")
    whole = image_bytes(size=(64, 64))
    (root / "dogs" / "bad.png").write_bytes(whole[: len(whole) // 2])  # a truly broken image
    (root / ".DS_Store").write_bytes(b"\0")
    result, report = inspect(root, tmp_path / "report.json")
    assert reasons(report, root) == {"dogs/bad.png": "truncated image"}
    assert sorted(p.removeprefix(f"{root}/") for p in report["ignored"]) == [
        ".DS_Store",
        "LICENSE",
        "README.md",
        "cats/notes.txt",
        "labels.csv",
    ]
    text = " ".join(result.output.split())
    assert "skipped 1 file: 1 truncated image" in text
    assert f"ignored 1 system/hidden entry (e.g. {root}/.DS_Store) and 4 non-image files" in text
    assert report["unreadable"] == 1 and report["total"] == 9
