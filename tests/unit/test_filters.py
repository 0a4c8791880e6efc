"""Hand-written kernels against their closed forms, and the filters/convolve commands."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nnlab.cli import main
from nnlab.errors import ConfigError, DataError
from nnlab.inspection.filters import apply_kernel, read_kernel


def step_image():
    image = torch.zeros(6, 8)
    image[:, 4:] = 1.0  # a vertical edge between columns 3 and 4
    return image


def test_sobel_x_finds_the_vertical_edge_and_sobel_y_does_not():
    image = step_image()
    gx = apply_kernel(image, read_kernel("sobel-x"))
    gy = apply_kernel(image, read_kernel("sobel-y"))
    assert gx.shape == image.shape
    assert torch.equal(gx[2], torch.tensor([0, 0, 0, 4, 4, 0, 0, -4.0]))  # -4: the zero padding makes an edge on the right
    assert gy[1:-1].abs().max() == 0


def test_pooling_halves_the_size_and_blur_keeps_a_flat_image():
    flat = torch.full((6, 8), 0.5)
    blurred = apply_kernel(flat, read_kernel("blur"))
    assert torch.allclose(blurred[1:-1, 1:-1], flat[1:-1, 1:-1])
    assert apply_kernel(step_image(), read_kernel("sobel-x"), pool="max", size=2).shape == (3, 4)
    pooled = apply_kernel(step_image(), torch.ones(1, 1), pool="avg", size=2)
    assert torch.equal(pooled[0], torch.tensor([0, 0, 1, 1.0]))


def test_kernel_from_a_file_and_bad_files(tmp_path):
    (tmp_path / "k.txt").write_text("0 1\n-1 0\n")
    assert read_kernel(str(tmp_path / "k.txt")).tolist() == [[0, 1], [-1, 0]]
    (tmp_path / "bad.txt").write_text("1 2\n3\n")
    with pytest.raises(DataError, match="bad.txt: expected a rectangle"):
        read_kernel(str(tmp_path / "bad.txt"))
    with pytest.raises(ConfigError, match="not a kernel name"):
        read_kernel("emboss")


def test_convolve_and_filters_commands_write_pngs(image_run, tmp_path, capsys):
    pixels = np.zeros((28, 28), np.uint8)
    pixels[:, 14:] = 255
    Image.fromarray(pixels).save(tmp_path / "edge.png")
    assert main(["convolve", str(tmp_path / "edge.png"), "--kernel", "sobel-x", "--pool", "max", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["output_shape"] == [14, 14] and result["max"] > 3
    assert (tmp_path / "edge.sobel-x.png").read_bytes()[:4] == b"\x89PNG"
    out = tmp_path / "grids"
    assert main(["filters", str(image_run), "--image", str(tmp_path / "edge.png"), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["filters"] == 8 and result["filter_shape"] == [1, 3, 3]  # the run's first conv: widths (8, ...)
    assert result["featuremap_shape"] == [8, 28, 28]
    assert (out / "filters.png").is_file() and (out / "featuremaps.png").is_file()
    assert main(["filters", str(image_run), "--layer", "nope"]) == 2
