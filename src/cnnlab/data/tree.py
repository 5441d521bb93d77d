"""A folder or a .zip seen the same way: relative POSIX paths, a change stamp, and bytes.

Zips are read in place (never extracted), so a dataset shipped as a zip is used as it is.
Trees are small picklable values: worker processes reopen a zip once each and keep it.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Entries made by operating systems and tools, never classes or samples.
SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx", "$recycle.bin"}


def is_system_entry(name: str) -> bool:
    """Hidden files and folders (.DS_Store, ._x, .git/, .ipynb_checkpoints/) and OS litter."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


@dataclass(frozen=True)
class TreeFile:
    inner: str  # path inside the tree, POSIX; ends with "/" for an empty folder
    stamp: str  # changes whenever the file's bytes can have changed

    @property
    def is_empty_folder(self) -> bool:
        """Kept so that an empty class folder is reported, not silently absent."""
        return self.inner.endswith("/")


@dataclass(frozen=True)
class Tree:
    """A folder (`zip_path` empty) or a zip archive."""

    location: str  # the folder or the .zip, as the user named it
    is_zip: bool

    def files(self) -> tuple[list[TreeFile], list[str]]:
        """All data files, and the system entries left out (each folder named once)."""
        return _zip_files(self.location) if self.is_zip else _dir_files(self.location)

    def read(self, inner: str) -> bytes:
        if self.is_zip:
            return _open_zip(self.location).read(inner)
        return (Path(self.location) / inner).read_bytes()

    def display(self, inner: str) -> str:
        return f"{self.location}/{inner}"


def open_tree(location: str | os.PathLike[str]) -> Tree:
    path = Path(location)
    if path.is_dir():
        return Tree(str(path), is_zip=False)
    if path.is_file() and zipfile.is_zipfile(path):
        return Tree(str(path), is_zip=True)
    if path.exists():
        raise FileNotFoundError(f"{path}: not a folder or a .zip archive")
    raise FileNotFoundError(f"{path}: no such folder or file")


def _dir_files(root: str) -> tuple[list[TreeFile], list[str]]:
    files, ignored = [], []
    for folder, dirs, names in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        prefix = "" if rel_folder == "." else rel_folder.replace(os.sep, "/") + "/"
        for name in sorted(dirs):
            if is_system_entry(name):
                ignored.append(prefix + name + "/")
        dirs[:] = sorted(d for d in dirs if not is_system_entry(d))
        data_names = [name for name in sorted(names) if not is_system_entry(name)]
        ignored += [prefix + name for name in sorted(names) if is_system_entry(name)]
        for name in data_names:
            info = os.stat(os.path.join(folder, name))
            files.append(TreeFile(prefix + name, f"{info.st_size}:{info.st_mtime_ns}"))
        if prefix and not dirs and not data_names:
            files.append(TreeFile(prefix, "empty"))
    return files, ignored


def _zip_files(location: str) -> tuple[list[TreeFile], list[str]]:
    files, ignored, folders = [], set(), set()
    archive = os.stat(location)
    for info in _open_zip(location).infolist():
        parts = info.filename.rstrip("/").split("/")
        hidden = next((i for i, part in enumerate(parts) if is_system_entry(part)), None)
        if hidden is not None:
            # A folder is named once, with its "/", whether the zip has an entry for it or not.
            is_folder = hidden < len(parts) - 1 or info.is_dir()
            ignored.add("/".join(parts[: hidden + 1]) + ("/" if is_folder else ""))
        elif info.is_dir():
            folders.add(info.filename)
        else:
            stamp = f"{archive.st_size}:{archive.st_mtime_ns}:{info.CRC}:{info.file_size}"
            files.append(TreeFile(info.filename, stamp))
    for folder in folders:
        if not any(f.inner.startswith(folder) for f in files) and not any(
            other != folder and other.startswith(folder) for other in folders
        ):
            files.append(TreeFile(folder, "empty"))
    return sorted(files, key=lambda f: f.inner), sorted(ignored)


_ZIPS: dict[tuple[str, int, int, int], zipfile.ZipFile] = {}


def _open_zip(location: str) -> zipfile.ZipFile:
    """One open handle per archive and process: reopening per file would dominate small images.

    The key includes size and mtime, so an archive replaced on disk is reopened, not misread.
    """
    info = os.stat(location)
    # The pid too: a forked worker must not share its parent's file offset (garbled reads).
    key = (location, info.st_size, info.st_mtime_ns, os.getpid())
    handle = _ZIPS.get(key)
    if handle is None:
        handle = _ZIPS[key] = zipfile.ZipFile(location)
    return handle
