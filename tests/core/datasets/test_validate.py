"""Image validation: real Pillow decoding restricted to the accepted formats."""

from __future__ import annotations

import pytest

from modelyard.core.datasets.validate import InvalidImage, probe_image
from tests.core.datasets.factories import animated_gif, image_bytes, jpeg_with_orientation, png_claiming

LIMIT = 178_956_970


@pytest.mark.parametrize(("pillow_format", "name"), [
    ("JPEG", "jpeg"), ("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tiff"),
])
def test_each_accepted_format_is_recognised_with_its_size(pillow_format: str, name: str) -> None:
    facts = probe_image(image_bytes(pillow_format, size=(20, 14)), LIMIT)
    assert (facts.format, facts.width, facts.height) == (name, 20, 14)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_and_palette_images_are_accepted(mode: str) -> None:
    assert probe_image(image_bytes("PNG", mode=mode), LIMIT).mode == mode


def test_animated_gif_is_accepted_by_its_first_frame() -> None:
    facts = probe_image(animated_gif(frames=3, size=(10, 8)), LIMIT)
    assert (facts.format, facts.width, facts.height) == ("gif", 10, 8)


@pytest.mark.parametrize(("orientation", "expected"), [(1, (30, 10)), (3, (30, 10)), (6, (10, 30)), (8, (10, 30))])
def test_exif_orientation_is_applied_to_recorded_size(orientation: int, expected: tuple[int, int]) -> None:
    facts = probe_image(jpeg_with_orientation((30, 10), orientation), LIMIT)
    assert (facts.width, facts.height) == expected


@pytest.mark.parametrize("pillow_format", ["PNG", "JPEG"])
def test_truncated_file_is_rejected(pillow_format: str) -> None:
    data = image_bytes(pillow_format, size=(64, 64), colour=3)
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        probe_image(data[: len(data) * 2 // 3], LIMIT)


def test_text_file_named_png_is_not_an_image() -> None:
    with pytest.raises(InvalidImage, match="not a recognised image"):
        probe_image(b"hello, I am not a picture\n" * 10, LIMIT)


def test_other_pillow_formats_are_refused() -> None:
    with pytest.raises(InvalidImage, match="not a recognised image"):
        probe_image(image_bytes("PPM"), LIMIT)


def test_png_header_claiming_50000_squared_pixels_is_a_decompression_bomb() -> None:
    with pytest.raises(InvalidImage, match="decompression bomb"):
        probe_image(png_claiming(50_000, 50_000), LIMIT)


def test_pixel_limit_is_configurable() -> None:
    data = image_bytes("PNG", size=(32, 32))
    assert probe_image(data, 32 * 32).width == 32
    with pytest.raises(InvalidImage, match="32x32 pixels, more than the limit of 1000"):
        probe_image(data, 1000)
