"""Shared fixtures: small REAL image folders built with Pillow, and a private decode cache.

Every test gets its own CNNLAB_CACHE, so no test reads or writes ~/.cache and no test sees
another's cached pixels.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

ImageWriter = Callable[..., Path]
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def require_folder(folder: Path) -> Path:
    """`folder` (or file) when present; absent: skip locally, but fail on CI, where it must be."""
    require_paths([folder])
    return folder


def require_paths(paths: list[Path]) -> None:
    absent = [str(path) for path in paths if not path.exists()]
    if not absent:
        return
    reason = f"real datasets not found ({', '.join(absent)}; the shared/ folder beside the repo)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide them")
    pytest.skip(reason)


@pytest.fixture
def require() -> Callable[[Path], Path]:
    return require_folder


@pytest.fixture
def datasets() -> Path:
    """../shared/datasets beside the repository (skip locally when absent, fail on CI)."""
    return require_folder(SHARED_DATASETS)


@pytest.fixture(autouse=True)
def restore_determinism() -> Iterator[None]:
    """A trained run switches torch's global determinism and cuDNN's autotuner; every test
    leaves them as it found them."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    yield
    torch.use_deterministic_algorithms(before)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh decode-cache folder per test (the cache resolves CNNLAB_CACHE at each load)."""
    root = tmp_path / "cnnlab-cache"
    monkeypatch.setenv("CNNLAB_CACHE", str(root))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return root


def image_bytes(
    mode: str = "RGB", size: tuple[int, int] = (8, 8), seed: int = 0, fmt: str = "PNG"
) -> bytes:
    """A small noise image (distinct bytes per seed) in `mode`, encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    width, height = size
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        values = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        image = Image.fromarray(values)  # 16-bit grayscale; PNG stores it as such
    elif mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "RGBA":
        image = rgb.convert("RGBA")
        image.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
    else:
        image = rgb.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def write_image() -> ImageWriter:
    """write_image(path, mode="RGB", size=(8, 8), seed=0, fmt=None): a real image file.

    The format follows the suffix (.jpg/.jpeg: JPEG, else PNG) unless `fmt` is given.
    """

    def write(
        path: Path,
        mode: str = "RGB",
        size: tuple[int, int] = (8, 8),
        seed: int = 0,
        fmt: str | None = None,
    ) -> Path:
        if fmt is None:
            fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(mode, size, seed, fmt))
        return path

    return write


@pytest.fixture
def make_classes(write_image: ImageWriter) -> Callable[..., Path]:
    """make_classes(root, {"cats": 3, "dogs": 2}, size=(8, 8), suffix=".png", seed=0).

    One sub-folder per class with that many distinct images (no two share bytes).
    """

    def make(
        root: Path,
        counts: Mapping[str, int],
        size: tuple[int, int] = (8, 8),
        suffix: str = ".png",
        seed: int = 0,
    ) -> Path:
        for label, count in counts.items():
            for k in range(count):
                seed += 1
                write_image(root / label / f"{label}_{k:03d}{suffix}", size=size, seed=seed)
        root.mkdir(parents=True, exist_ok=True)
        return root

    return make


# Usable images of the messy tree per class, and the unusable files with their reasons.
MESSY_USABLE = {"cats": 7, "dogs": 6}
MESSY_UNUSABLE = {
    "cats/broken.jpg": "truncated image",
    "dogs/empty.jpg": "zero-byte file",
    "dogs/notes.jpg": "not an image",
}
MESSY_IGNORED = {
    ".DS_Store",
    ".git/",
    ".ipynb_checkpoints/",
    "__MACOSX/",
    "cats/.DS_Store",
    "dogs/Thumbs.db",
    "dogs/.ipynb_checkpoints/",
}


@pytest.fixture
def messy_expectations() -> dict[str, object]:
    return {"usable": MESSY_USABLE, "unusable": MESSY_UNUSABLE, "ignored": MESSY_IGNORED}


@pytest.fixture
def messy_tree(tmp_path: Path, write_image: ImageWriter) -> Path:
    """A class-folder tree as users really have them: mixed modes and formats, broken files,
    OS and tool litter, and an empty class folder (`birds/`)."""
    root = tmp_path / "messy"
    cats, dogs = root / "cats", root / "dogs"
    for seed, (name, mode) in enumerate(
        [
            ("rgb.jpg", "RGB"),
            ("gray.jpg", "L"),
            ("rgb.png", "RGB"),
            ("alpha.png", "RGBA"),
            ("palette.png", "P"),
            ("bilevel.png", "1"),
            ("deep.png", "I;16"),
        ],
        start=1,
    ):
        write_image(cats / name, mode=mode, size=(8 + seed, 8), seed=seed)
    for seed in range(5):
        write_image(dogs / f"dog{seed}.jpeg", mode="RGB", size=(10, 8), seed=100 + seed)
    # Content decides: a PNG saved under a .jpg name is a usable image.
    write_image(dogs / "really_a_png.jpg", mode="RGB", size=(10, 8), seed=200, fmt="PNG")

    whole = image_bytes("RGB", (64, 64), seed=300, fmt="JPEG")
    (cats / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    (dogs / "empty.jpg").write_bytes(b"")
    (dogs / "notes.jpg").write_text("not a picture, just notes\n", encoding="utf-8")

    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (cats / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (dogs / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    write_image(root / "__MACOSX" / "cats" / "._x.jpg", seed=400)
    write_image(root / ".ipynb_checkpoints" / "cat-checkpoint.png", seed=401)
    write_image(dogs / ".ipynb_checkpoints" / "dog0-checkpoint.jpeg", seed=402)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (root / "birds").mkdir()  # a class folder someone forgot to fill
    return root


@pytest.fixture
def zip_folder() -> Callable[..., Path]:
    """zip_folder(folder, archive, prefix=""): every file and folder of `folder` into a zip,
    under `prefix` (e.g. "cats_and_dogs_filtered/"), with folder entries as `zip -r` writes."""

    def pack(folder: Path, archive: Path, prefix: str = "") -> Path:
        archive.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive, "w") as out:
            for path in sorted(folder.rglob("*")):
                name = prefix + path.relative_to(folder).as_posix()
                if path.is_dir():
                    out.writestr(name + "/", b"")
                else:
                    out.write(path, name)
        return archive

    return pack


# --- a tiny real run on scikit-learn's digits, for the tests of what comes after a run --------

TINY_DIGITS_NET = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"Flatten": {}},
    {"Dense": {"units": 10, "activation": "softmax"}},
]


def write_digits_config(path: Path, **sections: object) -> Path:
    """An experiment on scikit-learn's 8x8 digits (grayscale, no files needed; 20 % validation,
    20 % test), a tiny layer list, one epoch of Adam in batches of 64. Each of `sections`
    replaces that whole section."""
    import yaml

    raw = {
        "seed": 0,
        "data": {
            "source": "digits",
            "color_mode": "grayscale",
            "validation_split": 0.2,
            "test_split": 0.2,
        },
        "model": {"layers": TINY_DIGITS_NET},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam"}},
        **sections,
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def digits_config() -> Callable[..., Path]:
    """digits_config(path, **sections): see write_digits_config."""
    return write_digits_config


@pytest.fixture(scope="session")
def train_digits() -> Callable[..., Path]:
    """train_digits(root, **sections): a finished run of digits_config under root/runs, made
    quietly with its own decode cache (root/cache); returns its folder. For module-scoped
    fixtures, which the per-test cache and determinism fixtures do not reach."""

    def train(root: Path, **sections: object) -> Path:
        import torch

        import cnnlab

        config = write_digits_config(root / "digits.yaml", **sections)
        before = torch.are_deterministic_algorithms_enabled()
        benchmark = torch.backends.cudnn.benchmark
        deterministic = torch.backends.cudnn.deterministic
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("CNNLAB_CACHE", str(root / "cache"))
                return cnnlab.run(config, output_dir=root / "runs", quiet=True).folder
        finally:
            torch.use_deterministic_algorithms(before)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = (
                benchmark,
                deterministic,
            )

    return train


# --- members with one blind spot each, for the tests of ensembles --------------------------------

BLIND_SPOT_CLASSES = ("blue", "green", "red")
# member -> (the class its training labels give another name, that name): each member is wrong
# on a different class, right on the other two, so a majority of the three is always right
BLIND_SPOTS = {"a": ("blue", "green"), "b": ("green", "red"), "c": ("red", "blue")}
BLIND_SPOT_NET = [
    {"Conv2D": {"filters": 3, "kernel_size": 1}},
    {"GlobalAveragePooling2D": {}},
    {"Dense": {"units": 3, "activation": "softmax"}},
]


def write_blind_spots(root: Path) -> Path:
    """root/images: 8x8 PNGs whose bright channel is their class (10 train, 6 val, 6 test per
    class); root/labels_<member>.csv for each member of BLIND_SPOTS (val and test labelled
    truly, the same in every file), and labels_carved.csv (true labels, no val rows: a run
    carves its val split by its seed)."""
    rows = []
    for split, count in (("train", 10), ("val", 6), ("test", 6)):
        for channel, name in ((2, "blue"), (1, "green"), (0, "red")):
            for k in range(count):
                rng = np.random.default_rng(len(rows))
                pixels = rng.integers(0, 90, (8, 8, 3), dtype=np.uint8)
                pixels[..., channel] += 150
                file = f"{split}_{name}_{k:02d}.png"
                (root / "images").mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / "images" / file)
                rows.append((file, name, split))
    for member, (wrong, said) in {**BLIND_SPOTS, "carved": ("", "")}.items():
        lines = ["path,label,split"]
        for file, name, split in rows:
            label = said if split == "train" and name == wrong else name
            lines.append(f"{file},{label},{'' if member == 'carved' and split == 'val' else split}")
        (root / f"labels_{member}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def blind_spot_experiment(data: Path, member: str, out: Path, **sections: object) -> dict:
    """A member's experiment: the best weights by val_accuracy (its val loss grows as it learns
    its blind spot), 15 epochs of Adam, never stopped early."""
    return {
        "seed": 0,
        "data": {"source": str(data / "images"), "labels_csv": str(data / f"labels_{member}.csv")},
        "augment": {"rescale": 1 / 255},
        "model": {"layers": BLIND_SPOT_NET},
        "train": {
            "epochs": 15,
            "batch_size": 10,
            "optimizer": {"name": "adam", "lr": 0.05},
            "early_stopping": {"monitor": "val_accuracy", "patience": 50},
        },
        "output": {"dir": str(out)},
        **sections,
    }


@pytest.fixture(scope="session")
def blind_spots() -> SimpleNamespace:
    """.members ("a", "b", "c"), .write(root) and .experiment(data, member, out, **sections):
    see write_blind_spots and blind_spot_experiment."""
    return SimpleNamespace(
        members=tuple(BLIND_SPOTS), write=write_blind_spots, experiment=blind_spot_experiment
    )


@pytest.fixture(scope="session")
def blind_spot_runs(tmp_path_factory, blind_spots) -> dict[str, Path]:
    """The members a, b and c trained once per session (each wrong on its own class: 2/3 of
    val and test right) and their data: {"data": folder, "a": run folder, ...}. Tests that
    write into a run folder copy it first."""
    import torch

    import cnnlab
    from cnnlab.config import Experiment
    from cnnlab.config_io import validate

    root = tmp_path_factory.mktemp("blind_spots")
    found = {"data": write_blind_spots(root / "data")}
    before = torch.are_deterministic_algorithms_enabled()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CNNLAB_CACHE", str(root / "cache"))
            for member in BLIND_SPOTS:
                raw = blind_spot_experiment(found["data"], member, root / "runs")
                raw["output"]["name"] = member
                found[member] = cnnlab.run(validate(raw, Experiment, member), quiet=True).folder
    finally:
        torch.use_deterministic_algorithms(before)
    return found


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Paths decoded from their bytes (in-process reads), in order."""
    import cnnlab.data.ingest as ingest

    seen: list[str] = []
    real = ingest._check_one

    def counting(entry, options):
        seen.append(entry.inner)
        return real(entry, options)

    monkeypatch.setattr(ingest, "_check_one", counting)
    return seen
