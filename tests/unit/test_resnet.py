"""ResNet, VGG and torchvision backbones beyond what the registry-wide tests in test_models.py check."""
import pytest
import torch
import torchvision

from nnlab.errors import CheckpointError
from nnlab.models import create_model
from nnlab.models.backbones import weights_url
from nnlab.models.resnet import AdaptiveConcatPool2d, PreActBlock


def test_concat_pool_is_max_then_mean_per_channel():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    pooled = AdaptiveConcatPool2d()(x)
    assert pooled.shape == (2, 6)
    assert torch.equal(pooled[:, :3], x.amax(dim=(2, 3))) and torch.allclose(pooled[:, 3:], x.mean(dim=(2, 3)))


def test_preact_block_is_the_identity_plus_residual():
    block = PreActBlock(4, 4, 1).eval()
    with torch.no_grad():
        block.conv2.weight.zero_()  # residual branch silenced: only the clean shortcut is left
    x = torch.randn(2, 4, 6, 6)
    assert block.shortcut is None and torch.equal(block(x), x)
    down = PreActBlock(4, 8, 2)
    assert down(x).shape == (2, 8, 3, 3)


@pytest.mark.parametrize("name, size, feature_side", [("resnet9", 32, 4), ("preact_resnet18", 32, 4), ("vgg", 32, 4)])
def test_cifar_sized_input_gives_a_4x4_feature_map(name, size, feature_side):
    model = create_model(name, n_classes=10, in_channels=3, **({"widths": (8, 8, 16, 16)} if name != "vgg" else
                                                              {"stages": ((8,), (8,), (16,), (16,))}))
    features = model.forward_features(torch.randn(2, 3, size, size))
    assert features.shape[2:] == (feature_side, feature_side)
    assert (features >= 0).all()  # after the final ReLU: what CAM reads


def test_preact_resnet18_has_two_blocks_per_stage():
    model = create_model("preact_resnet18", widths=(8, 8, 16, 16))
    assert [len(stage) for stage in model.stages] == [2, 2, 2, 2]
    convs = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())
    assert convs == 17


def test_torchvision_weights_missing_offline_names_the_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("NNLAB_OFFLINE", "1")  # online, the file downloads: tests/unit/test_weights_download.py
    url = weights_url("resnet18")
    assert url.startswith("https://download.pytorch.org/models/resnet18-")
    expected = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    with pytest.raises(CheckpointError, match=f"not found at {expected}; download {url}"):
        create_model("resnet18", pretrained="torchvision")


def test_pretrained_weights_load_from_torch_home_and_grey_input_averages_rgb(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "hub" / "checkpoints" / weights_url("resnet18").rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = create_model("resnet18", n_classes=4, pretrained="torchvision").eval()
    assert torch.equal(model.body[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.forward_features(x), torch.nn.Sequential(*list(reference.eval().children())[:-2])(x))
    grey = create_model("resnet18", in_channels=1, pretrained=str(path))
    assert torch.allclose(grey.stem[0].weight[:, 0], reference.conv1.weight.mean(1))


def test_weights_file_with_code_or_wrong_shapes_is_refused(tmp_path):
    other = tmp_path / "other.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), other)
    with pytest.raises(CheckpointError, match="do not fit torchvision resnet18"):
        create_model("resnet18", pretrained=str(other))
    evil = tmp_path / "evil.pth"
    torch.save({"x": torch.nn.Linear(1, 1)}, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        create_model("resnet18", pretrained=str(evil))
