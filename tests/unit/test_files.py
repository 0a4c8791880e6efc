"""nnlab.files: the one atomic write, figure save and weights-only load."""
import os
import stat

import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from nnlab.errors import CheckpointError
from nnlab.files import atomic_write, figure_png, load_weights, save_figure


def small_figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def test_save_figure_writes_a_png_and_leaves_no_temp_file(tmp_path):
    path = save_figure(small_figure(), tmp_path / "sub" / "f.png", dpi=50)
    assert path == tmp_path / "sub" / "f.png" and os.listdir(tmp_path / "sub") == ["f.png"]
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (100, 100)  # 2 inches at 50 dpi
    assert path.read_bytes() == figure_png(small_figure(), dpi=50)


def test_a_figure_that_fails_to_draw_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "f.png"
    path.write_bytes(b"old")
    fig = small_figure()

    def broken(*args, **kwargs):
        raise RuntimeError("cannot draw")
    fig.savefig = broken
    with pytest.raises(RuntimeError, match="cannot draw"):
        save_figure(fig, path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.png"]


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")

    def half(handle):
        handle.write(b"new, but")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left on device") as caught:
        atomic_write(path, half)
    assert caught.value.filename == str(path)  # named by the target, not the temp file
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["data.bin"]


def test_atomic_write_takes_bytes_or_a_writer_and_gives_the_usual_mode(tmp_path):
    assert atomic_write(tmp_path / "a", b"bytes").read_bytes() == b"bytes"
    assert atomic_write(tmp_path / "b", lambda handle: handle.write(b"writer")).read_bytes() == b"writer"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_load_weights_returns_the_dict_and_names_the_file_in_each_refusal(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(load_weights(good)["w"], torch.ones(2))
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    torch.save({"layer": torch.nn.Linear(1, 1)}, tmp_path / "code.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    cases = {"absent.pt": "weights file not found", "list.pt": "expected a dict of weights, found list",
             "code.pt": "refused to load: the weights file holds more than weights", "cut.pt": "corrupt or truncated weights file"}
    for name, problem in cases.items():
        with pytest.raises(CheckpointError) as caught:
            load_weights(tmp_path / name, what="weights file")
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name}: ") and problem in message and "\n" not in message
