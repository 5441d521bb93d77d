"""Decode image files (or in-memory pixel arrays) into uint8 (C, H, W) numpy arrays.

This runs inside data-loading worker processes, so it imports only the stdlib, numpy and
Pillow: importing torch in every worker costs seconds and memory for nothing.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ColorMode = Literal["grayscale", "rgb"]
ResizePolicy = Literal["stretch", "pad", "crop"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]

_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
# Integer modes hold 16-bit samples (PNG/TIFF); "I" is how 16-bit data often arrives from TIFF.
_WIDE_INT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# The formats cnnlab decodes: Keras's and torchvision's image files (PPM covers PGM/PBM; JPEG's
# opener also gives MPO, the JPEG a phone camera writes). Pillow's other plugins (FITS, PSD,
# EPS, ...) are never tried: they can take seconds on a small file, and no one trains on them
# unknowingly.
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


@dataclass(frozen=True)
class DecodeOptions:
    """Plain values; DataConfig checks them (data.pipeline.decode_options builds these)."""

    color_mode: ColorMode = "rgb"
    target_size: tuple[int, int] | None = None  # (height, width), Keras order; None: native
    resize: ResizePolicy = "stretch"  # Keras's default; "pad" letterboxes, "crop" centre-crops
    interpolation: Interpolation = "bilinear"  # Keras image_dataset_from_directory default
    background: tuple[int, int, int] = (255, 255, 255)  # alpha is composited onto it; pad colour
    max_pixels: int = 89_478_485  # Pillow's own decompression-bomb limit


@dataclass(frozen=True)
class ImageInfo:
    format: str  # Pillow's format name from the content, e.g. "JPEG", "PNG"
    mode: str  # the file's own mode: "1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", ...
    width: int  # as stored (before EXIF rotation)
    height: int


class DecodeError(Exception):
    """A file that is not a usable image. `reason` is a short phrase for reports."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_image(
    data: bytes, options: DecodeOptions | None = None
) -> tuple[ImageInfo, np.ndarray | None]:
    """Verify `data` fully decodes; with options, also return the decoded uint8 array (C, H, W)."""
    if not data:
        raise DecodeError("zero-byte file")
    max_pixels = (options or DecodeOptions()).max_pixels
    with _pillow_limits_ours(), _open_loaded(data, max_pixels) as (image, info):
        if options is None:
            return info, None
        return info, _to_array(_apply_exif_orientation(image), options)


def convert_array(pixels: np.ndarray, options: DecodeOptions) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) pixels from array sources -> uint8 (C, H, W), same rules."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise ValueError(f"expected (H, W) or (H, W, 1|3|4) pixels, got shape {pixels.shape}")
    # fromarray picks L / RGB / RGBA from the shape, so alpha gets the same compositing.
    return _to_array(Image.fromarray(np.ascontiguousarray(pixels)), options)


# Pillow's limits are process globals. Its bomb check fires in Image.open (a warning above
# MAX_IMAGE_PIXELS, an error above twice that), before we could apply `max_pixels`; so while
# any decode runs we switch it off (we check the header size ourselves, before loading) and
# force truncated files to fail. A use count keeps this correct when threads overlap.
_limits_lock = threading.Lock()
_limits_users = 0
_limits_saved: tuple[int | None, bool] = (Image.MAX_IMAGE_PIXELS, False)


@contextlib.contextmanager
def _pillow_limits_ours() -> Iterator[None]:
    global _limits_users, _limits_saved
    with _limits_lock:
        if _limits_users == 0:
            _limits_saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
            Image.MAX_IMAGE_PIXELS = None
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _limits_users += 1
    try:
        yield
    finally:
        with _limits_lock:
            _limits_users -= 1
            if _limits_users == 0:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _limits_saved


@contextlib.contextmanager
def _open_loaded(data: bytes, max_pixels: int) -> Iterator[tuple[Image.Image, ImageInfo]]:
    try:
        image = Image.open(io.BytesIO(data), formats=_openers())
    except UnidentifiedImageError as error:
        found = _other_format(data)
        reason = f"unsupported image format {found}" if found else "not an image"
        raise DecodeError(reason) from error
    except Exception as error:
        raise _load_failure(error) from error
    with image:
        width, height = image.size
        info = ImageInfo(image.format or "unknown", image.mode, width, height)
        if width * height > max_pixels:
            raise DecodeError(
                f"image too large ({width}x{height} = {width * height:,} pixels"
                f" > max_pixels {max_pixels:,})"
            )
        try:
            image.load()  # decode every pixel now: truncation only shows up here
        except Exception as error:
            raise _load_failure(error) from error
        yield image, info


def _openers() -> list[str]:
    Image.init()  # a Pillow built without WebP has no opener for it
    return [name for name in SUPPORTED_FORMATS if name in Image.OPEN]


def _other_format(data: bytes) -> str | None:
    """The unsupported format whose magic bytes `data` starts with, to name it; nothing parsed."""
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        with contextlib.suppress(Exception):  # a plugin's check on too few bytes
            if name not in SUPPORTED_FORMATS and accept is not None and accept(data[:16]):
                return name
    return None


def _load_failure(error: Exception) -> Exception:
    # Pillow's plugins raise many types on bad input (OSError, SyntaxError, EOFError,
    # struct.error, ValueError...), so any failure means "unusable file" -- except running
    # out of memory, which is the machine's problem, not the file's.
    if isinstance(error, MemoryError):
        return error
    if isinstance(error, EOFError) or "truncated" in str(error).lower():
        return DecodeError("truncated image")
    return DecodeError("corrupt image")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Broken EXIF is metadata damage, not pixel damage: viewers (and Keras) still show
        # the image as stored, so keep it rather than drop a usable file.
        return image


def _to_array(image: Image.Image, options: DecodeOptions) -> np.ndarray:
    image = _resize(_to_output_mode(image, options), options)
    pixels = np.asarray(image, dtype=np.uint8)
    chw = pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    # Pillow hands out read-only buffers; torch.from_numpy warns on those, so own a copy.
    return np.require(chw, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])


def _to_output_mode(image: Image.Image, options: DecodeOptions) -> Image.Image:
    """Any Pillow mode -> 8-bit "L" or "RGB", alpha composited onto the background."""
    mode = image.mode
    try:
        if mode in _WIDE_INT_MODES:
            image = _wide_to_8bit(image)
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            image = _composite(image, options.background)
        target = "L" if options.color_mode == "grayscale" else "RGB"
        # convert("L") is ITU-R 601-2 luma, what Keras's grayscale loading gives.
        return image if image.mode == target else image.convert(target)
    except ValueError as error:  # Pillow has no conversion for this mode (e.g. LAB -> L)
        raise DecodeError(f"unsupported image mode {mode}") from error


def _wide_to_8bit(image: Image.Image) -> Image.Image:
    # Pillow's own I -> L conversion clamps at 255, turning most 16-bit images white; scale.
    values = np.asarray(image).astype(np.float64)
    gray = Image.fromarray(np.clip(np.rint(values * 255 / 65535), 0, 255).astype(np.uint8))
    transparent_value = image.info.get("transparency")
    if isinstance(transparent_value, int):  # a 16-bit tRNS names one fully transparent value
        alpha = np.where(values == transparent_value, 0, 255).astype(np.uint8)
        return Image.merge("LA", (gray, Image.fromarray(alpha)))
    return gray


def _composite(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    # convert("RGBA") also turns a palette or colour-key "transparency" entry into alpha.
    base = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")


def _resize(image: Image.Image, options: DecodeOptions) -> Image.Image:
    if options.target_size is None:
        return image
    height, width = options.target_size
    size = (width, height)  # Pillow is (width, height)
    if image.size == size:
        return image
    method = Image.Resampling[options.interpolation.upper()]  # the names match Pillow's
    if options.resize == "stretch":
        return image.resize(size, method)
    if options.resize == "crop":
        return ImageOps.fit(image, size, method)
    # Pad in the output mode; for "L" that is the background's own luma.
    fill = np.asarray(Image.new("RGB", (1, 1), options.background).convert(image.mode))
    colour = fill[0, 0].tolist()  # an int for "L", a list of three for "RGB"
    return ImageOps.pad(image, size, method, color=tuple(colour) if fill.ndim == 3 else colour)
