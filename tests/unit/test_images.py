import re

import numpy as np
import pytest
import torch
from PIL import Image

from nnlab.data.images import load_image, save_image
from nnlab.errors import DataError


def digit_like(height=37, width=23, background=255, ink=0):
    """A grey [H, W] array: a thick stroke of ``ink`` on ``background``, like a drawn digit."""
    pixels = np.full((height, width), background, np.uint8)
    pixels[height // 4: 3 * height // 4, width // 3: 2 * width // 3] = ink
    return pixels


def write_rgb(path):
    Image.fromarray(np.stack([digit_like()] * 3, axis=-1)).save(path)


def write_rgba(path):
    rgba = np.zeros((31, 45, 4), np.uint8)  # transparent black everywhere
    rgba[8:24, 15:30] = (0, 0, 0, 255)  # opaque black stroke
    Image.fromarray(rgba, mode="RGBA").save(path)


def write_palette(path):
    Image.fromarray(np.stack([digit_like()] * 3, axis=-1)).convert("P", palette=Image.Palette.ADAPTIVE).save(path)


def write_grey16(path):
    Image.fromarray(digit_like().astype(np.uint16) * 257).save(path)


def write_jpeg(path):
    Image.fromarray(np.stack([digit_like(101, 67)] * 3, axis=-1)).save(path, quality=90)


def write_cmyk(path):
    Image.fromarray(np.stack([digit_like()] * 3, axis=-1)).convert("CMYK").save(path)


@pytest.mark.parametrize("name, write", [("rgb.png", write_rgb), ("rgba.png", write_rgba),
                                         ("palette.png", write_palette), ("grey16.png", write_grey16),
                                         ("photo.jpg", write_jpeg), ("print.tiff", write_cmyk)])
def test_odd_size_inputs_of_any_mode_become_dark_background_grey_28x28(tmp_path, name, write):
    write(tmp_path / name)
    image = load_image(tmp_path / name, (28, 28), channels=1)
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8
    assert image[0, 0, 0] < 30  # light background, auto-inverted to dark
    assert image[0, 14, 14] > 225  # the dark stroke, inverted to light


def test_rgb_output_has_three_channels_of_the_requested_size(tmp_path):
    write_rgb(tmp_path / "rgb.png")
    image = load_image(tmp_path / "rgb.png", (32, 24), channels=3)
    assert image.shape == (3, 32, 24) and image.dtype == torch.uint8
    assert image[:, 0, 0].tolist() == [255, 255, 255]  # auto never inverts colour images


def test_auto_leaves_a_dark_background_and_no_forces_no_inversion(tmp_path):
    save_image(torch.from_numpy(digit_like(background=0, ink=255)), tmp_path / "mnist_like.png")
    save_image(torch.from_numpy(digit_like()), tmp_path / "white.png")
    assert load_image(tmp_path / "mnist_like.png", (28, 28), 1)[0, 0, 0] == 0
    assert load_image(tmp_path / "white.png", (28, 28), 1, invert="no")[0, 0, 0] == 255
    assert load_image(tmp_path / "mnist_like.png", (28, 28), 1, invert="yes")[0, 0, 0] == 255


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((10, 10), 32768, np.uint16)).save(tmp_path / "mid.png")
    image = load_image(tmp_path / "mid.png", (28, 28), 1, invert="no")
    assert image.min() == image.max() == 128


def test_wide_bar_stays_wide_and_is_padded_with_the_background(tmp_path):
    pixels = np.full((30, 90), 40, np.uint8)
    pixels[5:25, 5:85] = 220
    save_image(torch.from_numpy(pixels), tmp_path / "bar.png")
    image = load_image(tmp_path / "bar.png", (28, 28), 1, invert="no")[0]
    rows, cols = torch.nonzero(image > 130, as_tuple=True)
    bar_height, bar_width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert bar_width >= 3 * bar_height
    assert image[0].tolist() == [40] * 28 and image[-1].tolist() == [40] * 28  # padding is the background


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.full((20, 60, 3), 255, np.uint8)
    pixels[5:15, 5:55] = 0  # a wide dark bar as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif)
    loaded = load_image(tmp_path / "rotated.jpg", (28, 28), 1)[0]
    rows, cols = torch.nonzero(loaded > 128, as_tuple=True)
    assert rows.max() - rows.min() > 2 * (cols.max() - cols.min())  # displayed upright: a tall bar


def test_save_image_round_trips_grey_and_colour(tmp_path):
    grey = torch.randint(0, 256, (28, 28), dtype=torch.uint8)
    colour = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    save_image(grey, tmp_path / "grey.png")
    save_image(colour, tmp_path / "colour.png")
    assert torch.equal(load_image(tmp_path / "grey.png", (28, 28), 1, invert="no")[0], grey)
    assert torch.equal(load_image(tmp_path / "colour.png", (28, 28), 3, invert="no"), colour)


def write_text(path):
    path.write_text("this is not an image\n")


@pytest.mark.parametrize("name, make, problem", [
    ("missing.png", lambda p: None, "no such file"),
    ("empty.png", lambda p: p.write_bytes(b""), "empty"),
    ("notes.png", write_text, "not an image"),
    ("cut.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"),
     "damaged PNG: chunk IHDR at byte 8 is cut short"),
])
def test_unreadable_file_raises_data_error_naming_the_file(tmp_path, name, make, problem):
    path = tmp_path / name
    make(path)
    with pytest.raises(DataError, match=re.escape(str(path))) as caught:
        load_image(path, (28, 28), 1)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def png_chunks(data):
    """(type, offset, length) of each chunk of the PNG bytes ``data``."""
    import struct
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8].decode(), pos, length))
        pos += 12 + length
    return chunks


def test_a_png_whose_chunk_crc_is_wrong_is_refused_naming_the_file_and_the_chunk(image_run, tmp_path, capsys):
    from conftest import run_cli
    from nnlab.client import DamagedImage, open_upright
    save_image(torch.full((28, 28), 200, dtype=torch.uint8), tmp_path / "good.png")
    good = (tmp_path / "good.png").read_bytes()
    chunks = png_chunks(good)
    assert [name for name, _, _ in chunks] == ["IHDR", "IDAT", "IEND"]
    for name, offset, length in chunks:  # Pillow alone decoded a wrong IDAT or IEND CRC without a word
        damaged = bytearray(good)
        damaged[offset + 8 + length] ^= 1  # the first byte of the chunk's CRC: the pixels are intact
        path = tmp_path / f"bad-{name}.png"
        path.write_bytes(bytes(damaged))
        message = f"{path}: damaged PNG: chunk {name} at byte {offset} fails its CRC check"
        with pytest.raises(DataError) as caught:
            load_image(path, (28, 28), 1)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
        with pytest.raises(DamagedImage) as caught:  # the exported model's client refuses it the same way
            open_upright(path)
        assert str(caught.value).startswith(message)
    code, out, err = run_cli(capsys, "predict", str(image_run), str(tmp_path / "bad-IDAT.png"))
    assert code == 2 and out == "" and "damaged PNG: chunk IDAT" in err and len(err.strip().splitlines()) == 1
    assert load_image(tmp_path / "good.png", (28, 28), 1).shape == (1, 28, 28)
