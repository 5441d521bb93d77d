"""A folder or a .zip seen the same way: relative POSIX paths, a change stamp, and bytes.

Zips are read in place (never extracted), so a dataset shipped as a zip is used as it is.
Trees are small picklable values: worker processes reopen a zip once each and keep it.

An entry that can never be a sample is known from the listing alone, before any byte is
read: a broken or looping symlink, a FIFO or device, a file larger than any image, a zip
member with an absolute or `..` path, a declared size or compression ratio of a zip bomb,
an encrypted member. Such entries carry their `problem`, and the scan names them as skipped.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cnnlab.errors import DataError

# Entries made by operating systems and tools, never classes or samples.
SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx", "$recycle.bin"}
# Files that datasets ship beside their images and that no one means as a sample: documents,
# tables, code, checksums. Left out by name, as the system entries are (and listed as
# ignored), not decoded and counted as bad images. Archives stay out of this list: a
# train.zip beside val.zip is a part of the source.
# fmt: off
NOT_IMAGE_SUFFIXES = frozenset({
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml",
    ".xml", ".html", ".htm", ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".odt", ".ods", ".py",
    ".ipynb", ".sh", ".bat", ".log", ".ini", ".cfg", ".toml", ".sha1", ".sha256", ".md5",
    ".sig", ".asc",
})
NOT_IMAGE_NAMES = frozenset({  # without a suffix
    "readme", "license", "licence", "copying", "notice", "authors", "changelog", "changes",
    "citation", "manifest", "makefile", "sha1sums", "sha256sums", "sha512sums", "md5sums",
    "checksums",
})
# fmt: on
# One image file is at most this large: max_pixels' default (89 M pixels, Pillow's bomb
# limit) at 8 bytes a pixel (16-bit RGBA, stored uncompressed) is 716 MB. Reading more
# into memory, in every decode worker at once, is what a bomb wants.
MAX_FILE_BYTES = 2**30
# A zip member past BOMB_FLOOR that unpacks to more than BOMB_RATIO times its compressed size
# is a bomb, not an image: images are compressed already (PNG, JPEG: about 1:1 in a zip),
# and deflate's best is about 1032:1 (zeros). Small flat images (masks, BMP) may compress
# far more than 100:1, hence the floor.
BOMB_RATIO = 100
BOMB_FLOOR = 64 * 2**20
_READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE = re.compile(r"^[A-Za-z]:")


def is_system_entry(name: str) -> bool:
    """Hidden files and folders (.DS_Store, ._x, .git/, .ipynb_checkpoints/) and OS litter."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def is_not_image_name(name: str) -> bool:
    """README, LICENSE, notes.txt, labels.csv, data.json, ...: not images by their name."""
    suffix = PurePosixPath(name).suffix.lower()
    return suffix in NOT_IMAGE_SUFFIXES or (not suffix and name.lower() in NOT_IMAGE_NAMES)


def shown(text: str) -> str:
    """`text` as valid UTF-8 for screens, JSON and CSV: bytes of a file name that are not
    UTF-8 (Python keeps them as surrogates) are written as \\xNN, so the file is still used
    and named, and two names never show the same."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class TreeFile:
    inner: str  # path inside the tree, POSIX; ends with "/" for an empty folder
    stamp: str  # changes whenever the file's bytes can have changed
    problem: str | None = None  # why it can never be a sample, known from the listing

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
        """All data files (those with a `problem` too), and the entries left out: system and
        hidden ones (each folder named once) and files that are not images by name."""
        return _zip_files(self.location) if self.is_zip else _dir_files(self.location)

    def read(self, inner: str) -> bytes:
        """The file's bytes, never more than MAX_FILE_BYTES; OSError saying why not."""
        if self.is_zip:
            return _read_member(self.location, inner)
        with open(Path(self.location) / inner, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # a file grown since the listing
        if len(data) > MAX_FILE_BYTES:
            raise OSError(f"too large (more than {MAX_FILE_BYTES:,} bytes, {_LARGEST})")
        return data

    def display(self, inner: str) -> str:
        return f"{shown(self.location)}/{shown(inner)}"


def open_tree(location: str | os.PathLike[str]) -> Tree:
    path = Path(location)
    if path.is_dir():
        return Tree(str(path), is_zip=False)
    if path.is_file() and zipfile.is_zipfile(path):
        return Tree(str(path), is_zip=True)
    if path.exists():
        raise FileNotFoundError(f"{shown(str(path))}: not a folder or a .zip archive")
    raise FileNotFoundError(f"{shown(str(path))}: no such folder or file{searched(path)}")


def searched(path: Path) -> str:
    """Where a relative path was looked for, for a not-found message: like every cnnlab path, it
    is read from the current folder (not the config file's), which the message must name."""
    return "" if path.is_absolute() else f" in {shown(os.getcwd())} (the current folder)"


_LARGEST = "the largest image file cnnlab reads"


def _too_large(size: int) -> str:
    return f"{size:,} bytes, more than {MAX_FILE_BYTES:,}, {_LARGEST}"


# --- folders -----------------------------------------------------------------------------


def _dir_files(root: str) -> tuple[list[TreeFile], list[str]]:
    files: list[TreeFile] = []
    ignored: list[str] = []
    start = os.stat(root)
    _walk(root, "", {(start.st_dev, start.st_ino)}, files, ignored)
    return files, ignored


def _walk(
    folder: str,
    prefix: str,
    ancestors: set[tuple[int, int]],
    files: list[TreeFile],
    ignored: list[str],
) -> None:
    """Depth-first in name order, as os.walk, but following symlinked folders (as
    torchvision's ImageFolder does: a class folder linked in is a class) and naming, not
    crashing on, every entry that cannot be a sample."""
    try:
        with os.scandir(folder) as found:
            names = sorted(entry.name for entry in found)
    except OSError as err:
        if not prefix:
            raise DataError(f"{shown(folder)}: cannot be listed ({err.strerror})") from None
        files.append(TreeFile(prefix, "", f"folder cannot be listed ({err.strerror})"))
        return
    subfolders: list[tuple[str, str, tuple[int, int]]] = []
    kept = 0
    for name in names:
        path, inner = os.path.join(folder, name), prefix + name
        if is_system_entry(name):
            ignored.append(inner + ("/" if os.path.isdir(path) else ""))
            continue
        try:
            info = os.stat(path)  # follows symlinks
        except OSError as err:
            files.append(TreeFile(inner, "", _stat_problem(path, err)))
            continue
        if stat.S_ISDIR(info.st_mode):
            identity = (info.st_dev, info.st_ino)
            if identity in ancestors:
                problem = f"symlink loop (leads back to {shown(os.path.realpath(path))})"
                files.append(TreeFile(inner + "/", "", problem))
            else:
                subfolders.append((path, inner + "/", identity))
        elif is_not_image_name(name):
            ignored.append(inner)
        elif not stat.S_ISREG(info.st_mode):
            files.append(TreeFile(inner, "", "not a regular file (a device or pipe)"))
        elif info.st_size > MAX_FILE_BYTES:
            files.append(TreeFile(inner, "", f"too large ({_too_large(info.st_size)})"))
        else:
            # ctime too: a same-size edit whose mtime is put back (touch -r) still moves it
            stamp = f"{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"
            files.append(TreeFile(inner, stamp))
            kept += 1
    if prefix and not subfolders and not kept:
        files.append(TreeFile(prefix, "empty"))
    for path, inner, identity in subfolders:
        _walk(path, inner, ancestors | {identity}, files, ignored)


def _stat_problem(path: str, err: OSError) -> str:
    if os.path.islink(path):
        target = os.readlink(path)
        if err.errno == errno.ELOOP:
            return f"symlink loop (-> {shown(target)} never reaches a file)"
        if err.errno == errno.ENOENT:
            return f"broken symlink (-> {shown(target)}, which does not exist)"
    return f"cannot be read ({err.strerror or err})"


# --- zips --------------------------------------------------------------------------------


def _zip_files(location: str) -> tuple[list[TreeFile], list[str]]:
    files, ignored, folders = [], set(), set()
    archive = os.stat(location)
    for inner, info in _open_zip(location).members.items():
        parts = inner.rstrip("/").split("/")
        unsafe = _unsafe_path(inner)
        hidden = next((i for i, part in enumerate(parts) if is_system_entry(part)), None)
        if unsafe:
            files.append(TreeFile(inner, "", unsafe))
        elif hidden is not None:
            # A folder is named once, with its "/", whether the zip has an entry for it or not.
            is_folder = hidden < len(parts) - 1 or info.is_dir()
            ignored.add("/".join(parts[: hidden + 1]) + ("/" if is_folder else ""))
        elif info.is_dir():
            folders.add(inner)
        elif is_not_image_name(parts[-1]):
            ignored.add(inner)
        else:
            stamp = f"{archive.st_size}:{archive.st_mtime_ns}:{info.CRC}:{info.file_size}"
            files.append(TreeFile(inner, stamp, _member_problem(info)))
    usable = [f for f in files if f.problem is None]
    for folder in folders:
        if not any(f.inner.startswith(folder) for f in usable) and not any(
            other != folder and other.startswith(folder) for other in folders
        ):
            files.append(TreeFile(folder, "empty"))
    return sorted(files, key=lambda f: f.inner), sorted(ignored)


def _unsafe_path(inner: str) -> str | None:
    """Why a member's path is refused: it would name a place outside the archive (what
    zipfile.extract strips silently), or a class called '' or 'C:'."""
    if inner.startswith("/") or _DRIVE.match(inner):
        return "absolute path in the zip (path traversal)"
    parts = inner.rstrip("/").split("/")
    if ".." in parts:
        return "'..' in its path in the zip (path traversal)"
    if any(part in ("", ".") for part in parts):
        return "empty or '.' folder name in its path in the zip"
    return None


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member cannot be read, from its header alone (nothing is decompressed)."""
    if info.flag_bits & 0x1:
        return "encrypted in the zip (password-protected)"
    if info.compress_type not in _READABLE_METHODS:
        return f"unreadable compression in the zip (method {info.compress_type})"
    if info.file_size > MAX_FILE_BYTES:
        return f"zip bomb (declares {_too_large(info.file_size)})"
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > BOMB_FLOOR and ratio > BOMB_RATIO:
        return (
            f"zip bomb (declares {info.file_size:,} bytes from {info.compress_size:,}: "
            f"{ratio:,.0f}:1, over {BOMB_RATIO}:1)"
        )
    return None


def _read_member(location: str, inner: str) -> bytes:
    archive = _open_zip(location)
    info = archive.members.get(inner)
    if info is None:
        raise OSError(f"no member {inner!r} in the zip")
    problem = _unsafe_path(inner) or _member_problem(info)
    if problem:
        raise OSError(problem)
    try:
        with archive.handle.open(info) as member:
            # zipfile stops at the declared size and then checks the CRC, so a header that
            # understates the size gives an error, never more bytes than this.
            return member.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
        raise OSError(f"corrupt in the zip ({err})") from None


@dataclass(frozen=True)
class _Archive:
    handle: zipfile.ZipFile
    members: dict[str, zipfile.ZipInfo]  # POSIX path -> entry


_ZIPS: dict[tuple[str, int, int, int], _Archive] = {}


def _open_zip(location: str) -> _Archive:
    """One open handle per archive and process: reopening per file would dominate small images.

    The key includes size and mtime, so an archive replaced on disk is reopened, not misread.
    """
    info = os.stat(location)
    # The pid too: a forked worker must not share its parent's file offset (garbled reads).
    key = (location, info.st_size, info.st_mtime_ns, os.getpid())
    archive = _ZIPS.get(key)
    if archive is None:
        try:
            handle = zipfile.ZipFile(location)
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise DataError(
                f"{shown(location)}: not a readable zip archive ({err}); download or zip it again"
            ) from None
        # Zips made on Windows by some tools separate folders with "\": the same folders.
        members = {i.filename.replace("\\", "/"): i for i in handle.infolist()}
        archive = _ZIPS[key] = _Archive(handle, members)
    return archive
