"""The decode cache: decode once, never serve stale pixels, publish atomically, and memory-map
what does not fit the RAM budget."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import cnnlab.data.ingest as ingest
from cnnlab.config import DataConfig
from cnnlab.data.cache import default_cache_root
from cnnlab.data.pipeline import Data, examine, load_data
from cnnlab.errors import DataError


def load(source: Path, **settings: object) -> Data:
    settings.setdefault("validation_split", 0.0)  # every image in train, in path order
    return load_data(DataConfig(source=str(source), **settings), seed=0)


def pixels_of(data: Data, name: str) -> np.ndarray:
    train = data.splits["train"]
    return train.images[next(k for k, p in enumerate(train.paths) if p.endswith(name))]


def cache_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


@pytest.fixture
def pets(tmp_path, make_classes) -> Path:
    return make_classes(tmp_path / "pets", {"cats": 3, "dogs": 3})


def test_cache_lives_under_cnnlab_cache(cache_root, pets):
    assert default_cache_root() == cache_root
    load(pets)
    assert any(name.startswith("pixels-") for name in cache_files(cache_root))
    assert "checks.json" in cache_files(cache_root)


def test_cache_dir_setting_wins_over_the_environment(tmp_path, cache_root, pets):
    load(pets, cache_dir=str(tmp_path / "mine"))
    assert cache_files(tmp_path / "mine") and not cache_root.exists()


def test_second_load_is_served_from_the_cache_without_reading_files(pets, decodes, monkeypatch):
    first = load(pets)
    assert len(decodes) == 6

    def no_reading(entry, options):
        raise AssertionError(f"{entry.inner} was decoded again")

    monkeypatch.setattr(ingest, "_check_one", no_reading)
    second = load(pets)
    np.testing.assert_array_equal(second.splits["train"].images, first.splits["train"].images)
    assert second.manifest == first.manifest and second.fingerprint == first.fingerprint
    assert examine(DataConfig(source=str(pets)), None).report.classes == {"cats": 3, "dogs": 3}


def test_changed_file_gives_new_pixels_never_stale_ones(pets, write_image, decodes):
    before = pixels_of(load(pets), "cats_000.png").copy()
    target = pets / "cats" / "cats_000.png"
    stat = target.stat()
    write_image(target, seed=999)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    decodes.clear()

    after = load(pets)
    fresh = pixels_of(load(pets, cache_dir=str(pets.parent / "fresh")), "cats_000.png")
    assert not np.array_equal(pixels_of(after, "cats_000.png"), before)
    np.testing.assert_array_equal(pixels_of(after, "cats_000.png"), fresh)
    assert decodes  # the change was noticed and the files read again


def test_a_same_size_edit_with_its_mtime_put_back_is_still_decoded_again(pets, write_image):
    before = pixels_of(load(pets), "cats_000.png").copy()
    target = pets / "cats" / "cats_000.png"
    stat = target.stat()
    write_image(target, seed=999)  # same size (a PNG of the same shape), other pixels
    assert target.stat().st_size == stat.st_size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # `touch -r`: the old mtime

    after = pixels_of(load(pets), "cats_000.png")
    assert not np.array_equal(after, before)
    fresh = pixels_of(load(pets, cache_dir=str(pets.parent / "fresh")), "cats_000.png")
    np.testing.assert_array_equal(after, fresh)


def test_changed_decode_settings_decode_again(pets, decodes):
    native = load(pets)
    decodes.clear()
    small = load(pets, target_size=(4, 4))
    assert len(decodes) == 6
    decodes.clear()
    gray = load(pets, target_size=(4, 4), color_mode="grayscale")
    assert len(decodes) == 6
    assert native.input_shape == (8, 8, 3)
    assert small.input_shape == (4, 4, 3)
    assert gray.input_shape == (4, 4, 1)
    decodes.clear()
    assert load(pets, target_size=(4, 4)).input_shape == (4, 4, 3)  # still cached
    assert decodes == []


def test_published_cache_leaves_no_temporary_files(cache_root, pets):
    load(pets)
    load(pets, target_size=(4, 4))
    assert not [name for name in cache_files(cache_root) if name.endswith(".tmp")]
    assert not [name for name in cache_files(cache_root) if name.startswith(".")]


def test_mixed_sizes_without_target_size_name_the_key_and_publish_nothing(
    cache_root, tmp_path, write_image
):
    root = tmp_path / "mixed"
    write_image(root / "a" / "small.png", size=(8, 8), seed=1)
    write_image(root / "a" / "wide.png", size=(12, 8), seed=2)
    write_image(root / "b" / "small.png", size=(8, 8), seed=3)
    with pytest.raises(DataError, match=r"data\.target_size: images differ in size") as caught:
        load(root)
    assert "set data.target_size" in str(caught.value)
    assert cache_files(cache_root) == []  # no pixels, no checks, no temporary file
    assert load(root, target_size=(8, 8)).input_shape == (8, 8, 3)


def test_interrupted_decode_publishes_nothing_and_the_next_run_completes(
    cache_root, pets, monkeypatch
):
    real = ingest._check_one
    calls = []

    def interrupted(entry, options):
        calls.append(entry)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(entry, options)

    monkeypatch.setattr(ingest, "_check_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(pets)
    assert cache_files(cache_root) == []
    monkeypatch.setattr(ingest, "_check_one", real)
    assert len(load(pets).splits["train"]) == 6


def test_damaged_cache_file_is_decoded_again_not_trusted(cache_root, pets, decodes):
    first = load(pets)
    (pixels_file,) = cache_root.rglob("pixels-*.npy")
    pixels_file.write_bytes(b"garbage")
    decodes.clear()
    again = load(pets)
    assert len(decodes) == 6
    np.testing.assert_array_equal(again.splits["train"].images, first.splits["train"].images)


def test_split_over_the_ram_budget_is_memory_mapped_with_the_same_pixels(tmp_path, make_classes):
    # 32 images of 3x128x128 bytes = 1.5 MiB of pixels, over a 1 MiB budget.
    root = make_classes(tmp_path / "pets", {"cats": 16, "dogs": 16})
    mapped = load(root, target_size=(128, 128), ram_budget_mb=1, validation_split=0.25)
    in_ram = load(root, target_size=(128, 128), validation_split=0.25)
    for name in ("train", "val"):
        assert isinstance(mapped.splits[name].images, np.memmap)
        assert not isinstance(in_ram.splits[name].images, np.memmap)
        np.testing.assert_array_equal(mapped.splits[name].images, in_ram.splits[name].images)
        assert mapped.splits[name].paths == in_ram.splits[name].paths
    assert mapped.manifest == in_ram.manifest
