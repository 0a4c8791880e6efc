import pytest
import torch

from nnlab.data.batches import TensorBatches, batch_flip_lr, batch_random_crop, make_augment, stratified_split
from nnlab.errors import ConfigError


def make_data(n=103, classes=5):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    labels = torch.arange(n) % classes
    return images, labels


def test_stratified_split_keeps_each_class_share_and_is_disjoint():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    train, valid = stratified_split(labels, 0.1, torch.Generator().manual_seed(1))
    assert torch.bincount(labels[valid]).tolist() == [50, 30, 20]
    assert len(set(train.tolist()) & set(valid.tolist())) == 0
    assert sorted(train.tolist() + valid.tolist()) == list(range(1000))


def test_stratified_split_depends_only_on_seed():
    labels = torch.arange(200) % 4
    a = stratified_split(labels, 0.2, torch.Generator().manual_seed(7))
    b = stratified_split(labels, 0.2, torch.Generator().manual_seed(7))
    c = stratified_split(labels, 0.2, torch.Generator().manual_seed(8))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_stratified_split_rejects_bad_fraction():
    with pytest.raises(ConfigError, match="valid_fraction"):
        stratified_split(torch.zeros(10), 1.5, torch.Generator())


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_cover_every_sample_once_per_epoch(drop_last):
    images, labels = make_data()
    batches = TensorBatches(images, labels, 10, mean=(0.0,), std=(1 / 255,), shuffle=True, drop_last=drop_last)
    for _ in range(2):
        seen = torch.cat([x[:, 0, 0, 0].round().long() for x, _ in batches])
        assert len(seen) == len(batches) * 10 if drop_last else len(seen) == 103
        assert len(set(seen.tolist())) == len(seen)
    assert len(batches) == (10 if drop_last else 11)


def test_batches_labels_follow_their_images():
    images, labels = make_data()
    batches = TensorBatches(images, labels, 16, mean=(0.0,), std=(1 / 255,), shuffle=True)
    for x, y in batches:
        assert torch.equal(x[:, 0, 0, 0].round().long() % 5, y)


def test_batches_shuffle_order_differs_between_epochs_and_repeats_with_seed():
    images, labels = make_data()

    def orders(seed):
        b = TensorBatches(images, labels, 103, mean=(0.0,), std=(1 / 255,), shuffle=True,
                          generator=torch.Generator().manual_seed(seed))
        return [next(iter(b))[1].clone() for _ in range(2)]

    first, second = orders(3)
    assert not torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(orders(3), [first, second]))


def test_normalization_matches_the_formula():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1)
    batches = TensorBatches(images, torch.zeros(3, dtype=torch.long), 3, mean=(0.2,), std=(0.5,))
    x, _ = next(iter(batches))
    expected = (torch.tensor([0, 51, 255]) / 255 - 0.2) / 0.5
    assert torch.allclose(x.flatten(), expected, atol=1e-6)


def test_channels_last_batches_are_channels_last():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    b = TensorBatches(images, torch.zeros(4, dtype=torch.long), 4, mean=(0, 0, 0), std=(1, 1, 1), channels_last=True)
    x, _ = next(iter(b))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_flip_lr_mirrors_about_half_the_batch():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(1000, 1, 1, 1)
    out = batch_flip_lr(images, torch.Generator().manual_seed(0))
    flipped = (out != images).flatten(1).any(1)
    assert torch.equal(out[flipped], images[flipped].flip(3))
    assert 400 < flipped.sum() < 600


def test_random_crop_is_a_translation_within_padding():
    images = torch.zeros(200, 1, 9, 9, dtype=torch.uint8)
    images[:, :, 4, 4] = 255  # one bright pixel in the centre
    out = batch_random_crop(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) == 25  # every offset occurs
    assert (out.flatten(1).sum(1) == 255).all()


def test_augmentation_is_deterministic_under_the_seed():
    images = torch.randint(0, 255, (64, 1, 8, 8), dtype=torch.uint8)
    aug = make_augment(["flip_lr", "crop:2"])
    a = aug(images, torch.Generator().manual_seed(5))
    b = aug(images, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_unknown_augmentation_names_the_item():
    with pytest.raises(ConfigError, match="'rotate'"):
        make_augment(["rotate"])
