"""Batched augmentations: what each does to the pixels, and that the seed alone decides it."""
import pytest
import torch

from nnlab.data.batches import batch_cutout, batch_translate, make_augment
from nnlab.errors import ConfigError


def ramp(n=8, c=3, h=10, w=12):
    """Images whose every pixel value is distinct within an image: 0..H*W-1 per channel plane."""
    plane = torch.arange(h * w, dtype=torch.uint8).view(1, 1, h, w)
    return plane.repeat(n, c, 1, 1)


def test_translate_shifts_by_at_most_the_limit_and_repeats_the_edge():
    images = ramp()
    out = batch_translate(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for image in out:
        # Each row of a ramp holds one consecutive run; the shift is where the middle pixel came from.
        dr = int(image[0, 5, 6]) // 12 - 5
        dc = int(image[0, 5, 6]) % 12 - 6
        assert abs(dr) <= 2 and abs(dc) <= 2
        assert torch.equal(image[1], image[0])  # every channel moves together
        rows = (torch.arange(10) + dr).clamp(0, 9)
        cols = (torch.arange(12) + dc).clamp(0, 11)
        assert torch.equal(image[0], images[0, 0][rows][:, cols])


def test_cutout_zeroes_one_square_clipped_at_the_border():
    images = torch.full((16, 3, 12, 12), 200, dtype=torch.uint8)
    out = batch_cutout(images, 4, torch.Generator().manual_seed(1))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert ((zeros >= 4) & (zeros <= 16)).all() and (zeros == 16).any()
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)
    assert ((out == 0) | (out == 200)).all()


@pytest.mark.parametrize("spec", [["translate:3"], ["cutout:5"], ["flip_lr", "crop:2", "translate:1", "cutout:4"]])
def test_augmentations_are_deterministic_under_the_seed(spec):
    augment = make_augment(spec)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    first = augment(images, torch.Generator().manual_seed(7))
    again = augment(images, torch.Generator().manual_seed(7))
    other = augment(images, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("bad", ["cutout:0", "translate", "cutout:x", "rotate:3"])
def test_bad_augmentation_names_list_the_known_ones(bad):
    with pytest.raises(ConfigError, match="translate:PIXELS or cutout:SIZE"):
        make_augment([bad])
