"""nnlab export: each format reloads outside nnlab and reproduces the PyTorch model on real test images."""
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from nnlab.cli import main
from nnlab.config import load_config, save_config
from nnlab.kinds.tabular import TabularConfig
from nnlab.data.idx import read_idx
from nnlab.errors import CheckpointError, ConfigError
from nnlab.kinds.image import load_run, predict
from nnlab.commands import export as export_module
from nnlab.commands.export import FORMATS, export


def split_images(run_dir):
    """The run's own test images, read straight from its IDX file: uint8 [N, 28, 28]."""
    data = load_config(run_dir / "config.json").data
    return read_idx(f"{data}/t10k-images-idx3-ubyte.gz")


def normalize(pixels, meta):
    """What a consumer of the export does with its metadata: [N, H, W] uint8 -> float32 [N, 1, H, W]."""
    x = pixels.astype(np.float32)[:, None] / 255.0
    return ((x - meta["input"]["mean"][0]) / meta["input"]["std"][0]).astype(np.float32)


def run_exported(fmt, path, x):
    """Logits of the exported file on ``x``, loaded the way a user outside nnlab would."""
    if fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x})[0]
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            return torch.jit.load(str(path)).eval()(torch.from_numpy(x)).detach().numpy()
    from safetensors import safe_open
    from safetensors.torch import load_file

    from nnlab.models import create_model
    with safe_open(str(path), "pt") as handle:
        header = handle.metadata()
    model = create_model(header["model_name"], n_classes=len(json.loads(header["classes"])),
                         **json.loads(header["model_args"]))
    model.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_export_reloads_and_matches_pytorch_on_real_images(image_run, tmp_path, fmt):
    out = tmp_path / f"model{FORMATS[fmt]}"
    meta = export(image_run, fmt, out=out)
    written = json.loads((tmp_path / f"{out.name}.json").read_text())
    assert out.is_file() and written == json.loads(json.dumps({k: v for k, v in meta.items() if k != "metadata"}))
    assert meta["check"]["passed"] and meta["check"]["inputs"] == 64
    assert meta["check"]["max_abs_diff"] <= meta["check"]["tolerance"] < 1e-2
    assert meta["input"]["shape"] == ["batch", 1, 28, 28] and len(meta["classes"]) == 10
    assert meta["classes"][1] == "Trouser" and meta["input"]["mean"] == [0.286]
    if fmt == "onnx":
        assert meta["opset"] == 17

    # Independently of export's own check: a batch of another size, preprocessed from the metadata alone.
    x = normalize(split_images(image_run)[100:107], meta)
    _, model, _ = load_run(image_run)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_exported(fmt, out, x), expected, atol=1e-4, rtol=1e-4)


def test_onnx_export_predicts_like_nnlab_predict_on_an_image_file(image_run, tmp_path):
    import onnxruntime
    meta = export(image_run, "onnx", out=tmp_path / "m.onnx")
    pixels = split_images(image_run)[3]  # label 3: Dress
    Image.fromarray(pixels).save(tmp_path / "dress.png")
    expected = predict(image_run, [tmp_path / "dress.png"], top_k=1)[0]["top"][0]["class"]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": normalize(pixels[None], meta)})[0]
    assert meta["classes"][int(logits.argmax())] == expected == "Dress"


def test_default_output_goes_into_the_run_directory(image_run, tmp_path):
    run = shutil.copytree(image_run, tmp_path / "run")
    meta = export(run, "safetensors")
    assert meta["file"] == str(run / "model.safetensors") and (run / "model.safetensors.json").is_file()
    assert not (run / "model.safetensors").read_bytes()[8:].startswith(b"\x80")  # a JSON header, not a pickle


def test_export_that_does_not_match_is_refused_and_writes_nothing(image_run, tmp_path, monkeypatch):
    make, run = export_module.EXPORTERS["onnx"]
    monkeypatch.setitem(export_module.EXPORTERS, "onnx", (make, lambda *args: run(*args) + 0.01))
    with pytest.raises(CheckpointError, match="does not reproduce the PyTorch model"):
        export(image_run, "onnx", out=tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_missing_run_are_one_line_errors(image_run, tmp_path):
    with pytest.raises(ConfigError, match="--format: expected one of"):
        export(image_run, "tflite")
    with pytest.raises(CheckpointError, match="not an nnlab run directory"):
        export(tmp_path, "onnx")
    save_config(TabularConfig(dataset="iris"), tmp_path / "config.json")
    with pytest.raises(ConfigError, match="is a tabular run; export takes: image run"):
        export(tmp_path, "onnx")


def test_cli_export_prints_json_with_the_check(image_run, tmp_path, capsys):
    code = main(["export", str(image_run), "--format", "torchscript", "-o", str(tmp_path / "m.pt"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    meta = json.loads(out.strip().splitlines()[-1])
    assert meta["format"] == "torchscript" and meta["method"] in ("script", "trace") and meta["check"]["passed"]
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "not an nnlab run directory" in capsys.readouterr().err
