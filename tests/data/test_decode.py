"""Decoding real (tiny) image files built with Pillow into uint8 (C, H, W) arrays."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from cnnlab.data.decode import (
    DecodeError,
    DecodeOptions,
    ImageInfo,
    convert_array,
    read_image,
)

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def decode(data: bytes, **options: object) -> np.ndarray:
    _, pixels = read_image(data, DecodeOptions(**options))  # type: ignore[arg-type]
    assert pixels is not None
    return pixels


def reason_for(data: bytes, options: DecodeOptions | None = None) -> str:
    with pytest.raises(DecodeError) as caught:
        read_image(data, options)
    return caught.value.reason


def pixel(array: np.ndarray, row: int = 0, col: int = 0) -> tuple[int, ...]:
    return tuple(int(v) for v in array[:, row, col])


def noise_jpeg(size: int = 32) -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)), "JPEG")


# --- modes -> rgb / grayscale -------------------------------------------------------------


def test_rgb_png_decodes_to_contiguous_uint8_chw() -> None:
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    image.putpixel((2, 1), (40, 50, 60))
    info, pixels = read_image(encode(image), DecodeOptions())
    assert info == ImageInfo("PNG", "RGB", 3, 2)
    assert pixels is not None
    assert pixels.shape == (3, 2, 3)
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous and pixels.flags.writeable
    assert pixel(pixels) == (10, 20, 30)
    assert pixel(pixels, 1, 2) == (40, 50, 60)


def test_without_options_the_file_is_verified_but_no_pixels_returned() -> None:
    info, pixels = read_image(encode(Image.new("L", (5, 4))), None)
    assert info == ImageInfo("PNG", "L", 5, 4)
    assert pixels is None


def test_colour_to_grayscale_uses_pillow_601_luma() -> None:
    data = encode(Image.new("RGB", (1, 1), RED))
    pixels = decode(data, color_mode="grayscale")
    assert pixels.shape == (1, 1, 1)
    assert pixel(pixels) == (76,)  # 0.299 * 255


def test_grayscale_file_to_rgb_repeats_the_channel() -> None:
    pixels = decode(encode(Image.new("L", (1, 1), 77)), color_mode="rgb")
    assert pixel(pixels) == (77, 77, 77)
    assert pixel(decode(encode(Image.new("L", (1, 1), 77)), color_mode="grayscale")) == (77,)


def test_bilevel_mode_1_maps_to_0_and_255() -> None:
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    data = encode(image)
    assert decode(data, color_mode="grayscale")[0, 0].tolist() == [0, 255]
    assert pixel(decode(data), 0, 1) == WHITE


def test_palette_image_maps_through_its_palette() -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([*RED, 0, 0, 255])
    image.putpixel((1, 0), 1)
    pixels = decode(encode(image))
    assert pixel(pixels, 0, 0) == RED
    assert pixel(pixels, 0, 1) == (0, 0, 255)


@pytest.mark.parametrize(("alpha", "expected"), [(0, WHITE), (255, RED), (128, (255, 127, 127))])
def test_rgba_is_composited_onto_the_background(alpha: int, expected: tuple) -> None:
    pixels = decode(encode(Image.new("RGBA", (1, 1), (*RED, alpha))))
    assert np.abs(np.subtract(pixel(pixels), expected)).max() <= 1


def test_transparent_pixel_takes_a_custom_background() -> None:
    pixels = decode(encode(Image.new("RGBA", (1, 1), (*RED, 0))), background=(0, 64, 0))
    assert pixel(pixels) == (0, 64, 0)


def test_grayscale_output_composites_in_rgb_before_luma() -> None:
    # A fully transparent red pixel is the white background, not red's luma (76).
    pixels = decode(encode(Image.new("RGBA", (1, 1), (*RED, 0))), color_mode="grayscale")
    assert pixel(pixels) == (255,)


def test_la_image_is_composited_onto_the_background() -> None:
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (0, 255))
    assert decode(encode(image), color_mode="grayscale")[0, 0].tolist() == [255, 0]


def test_palette_with_transparency_entry_shows_the_background() -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([*RED, 0, 0, 255])
    image.putpixel((1, 0), 1)
    pixels = decode(encode(image, transparency=0), background=(0, 0, 0))
    assert pixel(pixels, 0, 0) == (0, 0, 0)
    assert pixel(pixels, 0, 1) == (0, 0, 255)


def test_palette_alpha_image_is_composited() -> None:
    image = Image.new("PA", (1, 1))
    image.putpalette([*RED])
    image.putpixel((0, 0), (0, 0))
    info, pixels = read_image(encode(image, "TIFF"), DecodeOptions())
    assert info.mode == "PA"
    assert pixels is not None
    assert pixel(pixels) == WHITE


def test_cmyk_converts_through_pillow_to_rgb_and_luma() -> None:
    data = encode(Image.new("CMYK", (1, 1), (0, 255, 255, 0)), "TIFF")  # pure red ink mix
    assert pixel(decode(data)) == RED
    assert pixel(decode(data, color_mode="grayscale")) == (76,)


def test_ycbcr_converts_to_rgb() -> None:
    data = encode(Image.new("YCbCr", (1, 1), (100, 128, 128)), "TIFF")  # neutral grey
    assert pixel(decode(data)) == (100, 100, 100)


@pytest.mark.parametrize("color_mode", ["grayscale", "rgb"])
def test_16_bit_png_is_scaled_not_clamped(color_mode: str) -> None:
    data = encode(Image.fromarray(np.array([[0, 32768, 65535, 257]], dtype=np.uint16)))
    info, pixels = read_image(data, DecodeOptions(color_mode=color_mode))  # type: ignore[arg-type]
    assert info.mode == "I;16"
    assert pixels is not None
    assert pixels[:, 0].T.tolist() == [[v] * pixels.shape[0] for v in (0, 128, 255, 1)]


def test_32_bit_integer_tiff_uses_the_same_16_bit_scale() -> None:
    data = encode(Image.fromarray(np.array([[32768, 65535]], dtype=np.int32)), "TIFF")
    assert decode(data, color_mode="grayscale")[0, 0].tolist() == [128, 255]


def test_16_bit_transparent_value_shows_the_background() -> None:
    data = encode(Image.fromarray(np.array([[0, 1000]], dtype=np.uint16)), transparency=1000)
    assert decode(data, color_mode="grayscale", background=(9, 9, 9))[0, 0].tolist() == [0, 9]


# --- EXIF orientation -----------------------------------------------------------------------


def jpeg_with_orientation(orientation: int) -> bytes:
    # 32 wide x 16 tall, an 8x8 red block in the stored top-left corner.
    image = Image.new("RGB", (32, 16), (0, 0, 0))
    image.paste(RED, (0, 0, 8, 8))
    exif = image.getexif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=95, subsampling=0)


@pytest.mark.parametrize(("orientation", "red_corner"), [(6, (0, -1)), (8, (-1, 0)), (1, (0, 0))])
def test_exif_orientation_is_applied_before_output(orientation: int, red_corner: tuple) -> None:
    info, pixels = read_image(jpeg_with_orientation(orientation), DecodeOptions())
    assert (info.width, info.height) == (32, 16)  # the header, as stored
    assert pixels is not None
    assert pixels.shape == ((3, 16, 32) if orientation == 1 else (3, 32, 16))
    red = pixel(pixels, *red_corner)
    assert red[0] > 200 and max(red[1:]) < 50
    assert max(pixel(pixels, 10, 10)) < 50  # away from the block: black


def test_exif_rotation_happens_before_resize() -> None:
    pixels = decode(jpeg_with_orientation(6), target_size=(8, 4))
    assert pixels.shape == (3, 8, 4)
    assert pixels[0, 0, -1] > 200


# --- resizing -------------------------------------------------------------------------------


def test_stretch_resizes_to_height_width_ignoring_aspect() -> None:
    pixels = decode(encode(Image.new("RGB", (4, 2), RED)), target_size=(3, 5))
    assert pixels.shape == (3, 3, 5)
    assert (pixels[0] == 255).all()


def test_pad_letterboxes_centred_with_the_background() -> None:
    data = encode(Image.new("RGB", (8, 4), (0, 0, 0)))  # wide: bars above and below
    pixels = decode(data, target_size=(8, 8), resize="pad", interpolation="nearest")
    assert pixels.shape == (3, 8, 8)
    assert (pixels[:, 2:6] == 0).all()
    assert (pixels[:, :2] == 255).all() and (pixels[:, 6:] == 255).all()


def test_grayscale_pad_uses_the_backgrounds_luma() -> None:
    data = encode(Image.new("L", (4, 8), 0))  # tall: bars left and right
    pixels = decode(data, color_mode="grayscale", target_size=(8, 8), resize="pad", background=RED)
    assert pixels[0, :, :2].tolist() == [[76, 76]] * 8
    assert (pixels[0, :, 2:6] == 0).all()


def test_crop_fills_the_target_and_keeps_the_centre() -> None:
    image = Image.new("RGB", (12, 4), RED)
    image.paste((0, 255, 0), (4, 0, 8, 4))  # only the middle third is green
    pixels = decode(encode(image), target_size=(4, 4), resize="crop", interpolation="nearest")
    assert pixels.shape == (3, 4, 4)
    assert (pixels[1] == 255).all() and (pixels[0] == 0).all()


@pytest.mark.parametrize("resize", ["stretch", "pad", "crop"])
def test_matching_size_is_left_untouched(resize: str) -> None:
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    pixels = decode(encode(Image.fromarray(stored)), target_size=(5, 7), resize=resize)
    assert np.array_equal(pixels, stored.transpose(2, 0, 1))


# --- unusable files -------------------------------------------------------------------------


@pytest.mark.parametrize("options", [None, DecodeOptions()])
def test_truncated_jpeg_is_reported_as_truncated(options: DecodeOptions | None) -> None:
    data = noise_jpeg()
    assert reason_for(data[: len(data) // 2], options) == "truncated image"


def test_truncated_png_is_reported_as_truncated() -> None:
    data = encode(Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)))
    assert reason_for(data[: len(data) // 2]) == "truncated image"


def test_truncated_file_fails_even_if_pillow_was_told_to_accept_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = noise_jpeg()
    assert reason_for(data[: len(data) // 2]) == "truncated image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_zero_byte_file_is_reported() -> None:
    assert reason_for(b"") == "zero-byte file"


def test_text_file_is_not_an_image() -> None:
    assert reason_for(b"this is a text file named cat.jpg\n") == "not an image"


def test_damaged_pixel_data_is_reported_as_corrupt() -> None:
    data = bytearray(encode(Image.new("RGB", (64, 64), RED)))
    start = data.index(b"IDAT") + 8
    data[start : start + 8] = b"\xff" * 8  # keep the length, break the zlib stream
    assert reason_for(bytes(data)) == "corrupt image"


def test_content_decides_the_format_not_the_file_name() -> None:
    info, _ = read_image(encode(Image.new("RGB", (2, 2))), None)  # e.g. saved as photo.jpg
    assert info.format == "PNG"


def test_image_over_max_pixels_is_refused_with_its_size() -> None:
    options = DecodeOptions(max_pixels=99)
    expected = "image too large (10x10 = 100 pixels > max_pixels 99)"
    assert reason_for(encode(Image.new("RGB", (10, 10))), options) == expected


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    # A valid header and no pixel data: enough for Pillow to open it, not to load it.
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"")


def test_huge_header_is_refused_before_decoding_not_by_pillow() -> None:
    # 100000 x 100000 would be Pillow's DecompressionBombError; ours reads the header only.
    reason = reason_for(png_header_only(100_000, 100_000))
    assert reason.startswith("image too large (100000x100000 = 10,000,000,000 pixels")


def test_our_max_pixels_governs_not_pillows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 100 pixels: over twice Pillow's limit
    data = encode(Image.new("RGB", (10, 10)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode(data, max_pixels=100).shape == (3, 10, 10)
    assert Image.MAX_IMAGE_PIXELS == 10  # restored for everyone else


# --- arrays (IDX, digits) -------------------------------------------------------------------


def test_convert_array_grayscale_2d_to_both_modes() -> None:
    gray = np.array([[0, 50], [100, 255]], dtype=np.uint8)
    same = convert_array(gray, DecodeOptions(color_mode="grayscale"))
    assert np.array_equal(same, gray[None]) and same.flags.writeable
    rgb = convert_array(gray, DecodeOptions())
    assert rgb.shape == (3, 2, 2) and np.array_equal(rgb, np.repeat(gray[None], 3, axis=0))


def test_convert_array_rgb_to_grayscale_and_resized() -> None:
    rgb = np.zeros((2, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    gray = convert_array(rgb, DecodeOptions(color_mode="grayscale"))
    assert gray.shape == (1, 2, 4) and (gray == 76).all()
    resized = convert_array(rgb, DecodeOptions(target_size=(4, 8)))
    assert resized.shape == (3, 4, 8) and resized.flags.c_contiguous
    assert (resized[0] == 255).all() and (resized[1:] == 0).all()


def test_convert_array_pads_2d_input() -> None:
    gray = np.zeros((2, 4), dtype=np.uint8)
    padded = convert_array(
        gray, DecodeOptions(color_mode="grayscale", target_size=(4, 4), resize="pad")
    )
    assert padded[0, :, 0].tolist() == [255, 0, 0, 255]


def test_convert_array_rejects_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        convert_array(np.zeros((2, 2), dtype=np.float32), DecodeOptions())
