"""Export an image run's model to TorchScript, ONNX or safetensors, checked against PyTorch.

The exported model takes what the PyTorch model takes: float32 [N, C, H, W] images scaled as
``(pixels / 255 - mean) / std``, and returns logits. Everything a consumer needs to feed it
(input size, mean/std, class names, the ONNX opset) goes into a JSON file beside the export,
``FILE.json``. Before anything is written, the exported bytes are loaded back (TorchScript by
``torch.jit.load``, ONNX by onnxruntime, safetensors into a freshly built model) and run on a
batch of real test images; the export is refused unless the logits match PyTorch's within
``ATOL + RTOL * max|logit|``.

The metadata describes itself: ``preprocess`` lists every step from an image file to the input
tensor (``nnlab.client.STEPS``), with the versions of nnlab and torch that wrote it. An ONNX
export also gets ``nnlab_client.py`` beside it: ``nnlab.client``, which runs those steps with
numpy, Pillow and onnxruntime alone (no nnlab, no torch) and predicts as ``nnlab predict`` does.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from nnlab import __version__, client
from nnlab.data.batches import TensorBatches
from nnlab.data.vision import load_image_dataset
from nnlab.files import atomic_write
from nnlab.errors import CheckpointError, ConfigError
from nnlab.kit.rundir import check_output, run_files, write_json
from nnlab.models import create_model

FORMATS: dict[str, str] = {"torchscript": ".torchscript.pt", "onnx": ".onnx", "safetensors": ".safetensors"}
ONNX_OPSET = 17
CHECK_INPUTS = 64
# Float32 kernels of different runtimes sum in different orders: logits of a few units agree to
# ~1e-6 in practice; the bound leaves headroom for bigger nets without hiding a wrong graph.
ATOL = 1e-4
RTOL = 1e-4




def check_inputs(config: Any, state: dict, data_path: str | Path | None, n: int = CHECK_INPUTS) -> torch.Tensor:
    """The first ``n`` test images of the run's dataset, normalized as the model saw them in training."""
    data = load_image_dataset(config.dataset, data_path or config.data)
    images = data.test_images[:n]
    batches = TensorBatches(images, torch.zeros(len(images), dtype=torch.long), len(images),
                            mean=state["mean"], std=state["std"])
    return next(iter(batches))[0]


def _torchscript(model: torch.nn.Module, example: torch.Tensor, state: dict) -> tuple[bytes, dict]:
    """Script the model, or trace it where scripting fails; the bytes of ``torch.jit.save``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices: the format still loads everywhere
        try:
            module, method = torch.jit.script(model), "script"
        except Exception:  # scripting rejects some Python constructs; tracing records the ops instead
            module, method = torch.jit.trace(model, example), "trace"
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
    return buffer.getvalue(), {"method": method}


def _run_torchscript(blob: bytes, inputs: torch.Tensor, state: dict) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(io.BytesIO(blob), map_location="cpu")
    with torch.no_grad():
        return module(inputs)


def _onnx(model: torch.nn.Module, example: torch.Tensor, state: dict) -> tuple[bytes, dict]:
    """ONNX through torch's TorchScript-based exporter (``dynamo=False``), with a dynamic batch axis."""
    import onnx
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    blob = buffer.getvalue()
    proto = onnx.load_from_string(blob)
    onnx.checker.check_model(proto)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return blob, {"opset": opset, "ir_version": proto.ir_version, "input_name": "input", "output_name": "logits",
                  "onnx_version": onnx.__version__}


def _run_onnx(blob: bytes, inputs: torch.Tensor, state: dict) -> torch.Tensor:
    import onnxruntime
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": inputs.numpy()})
    return torch.from_numpy(logits)


def _safetensors(model: torch.nn.Module, example: torch.Tensor, state: dict) -> tuple[bytes, dict]:
    """The state dict as safetensors (no code, no pickle), with the model's name and arguments in its header."""
    from safetensors.torch import save
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    header = {"model_name": state["model_name"], "model_args": json.dumps(state["model_args"]),
              "classes": json.dumps(state["classes"])}
    return save(tensors, metadata=header), {"model_name": state["model_name"], "model_args": state["model_args"]}


def _run_safetensors(blob: bytes, inputs: torch.Tensor, state: dict) -> torch.Tensor:
    from safetensors.torch import load
    model = create_model(state["model_name"], n_classes=len(state["classes"]), **state["model_args"])
    model.load_state_dict(load(blob))
    with torch.no_grad():
        return model.eval()(inputs)


EXPORTERS: dict[str, tuple[Callable[..., tuple[bytes, dict]], Callable[..., torch.Tensor]]] = {
    "torchscript": (_torchscript, _run_torchscript),
    "onnx": (_onnx, _run_onnx),
    "safetensors": (_safetensors, _run_safetensors),
}


def compare(expected: torch.Tensor, got: torch.Tensor) -> dict[str, Any]:
    """Max absolute logit difference, the tolerance it must stay within, and top-1 agreement."""
    if got.shape != expected.shape:
        return {"passed": False, "reason": f"output shape {tuple(got.shape)}, expected {tuple(expected.shape)}"}
    diff = (got.float() - expected).abs().max().item()
    tolerance = ATOL + RTOL * expected.abs().max().item()
    agree = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    return {"passed": diff <= tolerance, "max_abs_diff": diff, "tolerance": tolerance, "top1_agreement": agree}


def mismatch(check: dict[str, Any]) -> str:
    """Why a ``compare`` result failed, in a few words."""
    return check.get("reason") or f"max |diff| {check['max_abs_diff']:.3g} > {check['tolerance']:.3g}"


def metadata_path(out: Path) -> Path:
    """Where the metadata of export ``out`` goes: ``FILE.json`` beside it."""
    return out.with_name(out.name + ".json")


def client_path(out: Path) -> Path:
    """Where the reference client of export ``out`` goes: ``nnlab_client.py`` beside it (one serves every export)."""
    return out.with_name("nnlab_client.py")


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None,
           data_path: str | Path | None = None) -> dict[str, Any]:
    """Export the run's best model as ``fmt`` to ``out`` (default ``RUN_DIR/model.<ext>``) and check it.

    The check runs the exported bytes on the first ``CHECK_INPUTS`` real test images of the run's
    dataset (``data_path`` overrides where to find it) and compares with the PyTorch model; a
    mismatch raises ``CheckpointError`` and writes nothing. Returns the metadata, also written as
    ``FILE.json``, and for ONNX the reference client ``nnlab_client.py``. Neither ``out`` nor its
    ``FILE.json`` may be one of the run's own files (``run_files``: ``-o RUN/best.pt`` is refused).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    run_dir = Path(run_dir)
    out = check_output(out or run_dir / f"model{FORMATS[fmt]}", *run_files(run_dir), what="one of the run's files")
    check_output(metadata_path(out), *run_files(run_dir), what="one of the run's files (where the metadata would go)")
    from nnlab.kinds.image import load_run
    config, model, state = load_run(run_dir, "cpu")
    model = model.to(memory_format=torch.contiguous_format)
    inputs = check_inputs(config, state, data_path)
    with torch.no_grad():
        expected = model(inputs)
    make, run = EXPORTERS[fmt]
    blob, details = make(model, inputs[:2], state)
    check = {"inputs": len(inputs), "source": f"{config.dataset} test split, first {len(inputs)} images",
             **compare(expected, run(blob, inputs, state))}
    if not check["passed"]:
        raise CheckpointError(f"{run_dir}: the {fmt} export does not reproduce the PyTorch model "
                              f"({mismatch(check)}); nothing written")
    atomic_write(out, blob)
    channels, height, width = state["input_shape"]
    meta = {
        "format": fmt, "file": str(out), "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
        "run_dir": str(run_dir), "recipe": config.recipe, "model": state["model_name"], **details,
        "input": {"name": "input", "shape": ["batch", channels, height, width], "dtype": "float32",
                  "layout": "NCHW", "pixel_range": [0, 255], "mean": list(state["mean"]), "std": list(state["std"]),
                  "normalize": "(pixels / 255 - mean) / std, per channel",
                  "polarity": "light object on a dark background, as in the training data"},
        "output": {"name": "logits", "shape": ["batch", len(state["classes"])],
                   "meaning": "logits; softmax gives class probabilities"},
        "classes": list(state["classes"]), "tta_flip": bool(config.tta),
        "preprocess": {"from": "an image file, any size, colour mode or format Pillow reads", **client.STEPS},
        "nnlab_version": __version__, "torch_version": torch.__version__,
        "check": check,
    }
    if fmt == "onnx":
        source = Path(client.__file__).read_bytes()
        atomic_write(client_path(out), source)
        meta["client"] = {"file": str(client_path(out)), "needs": ["numpy", "pillow", "onnxruntime"],
                          "usage": f"python {client_path(out).name} {out.name} IMAGE... [--top-k K] "
                                   "[--invert auto|yes|no]"}
    write_json(metadata_path(out), meta)
    return {**meta, "metadata": str(metadata_path(out))}



class OnnxPredictor:
    """Class probabilities of an image run's model through onnxruntime (``nnlab serve --backend onnx``).

    The graph is the run's ONNX export ``RUN_DIR/model.onnx`` when its metadata says it passed
    export's check, its bytes still have the recorded sha256 and it is not older than ``best.pt``;
    otherwise the model is exported here, in memory, the same way. Either way it must reproduce
    the PyTorch model (``compare``) on ``CHECK_INPUTS`` images before it serves: the run's test
    images are not needed, so the check runs on random pixels normalized as the run's inputs.
    ``source`` says which graph serves. ``threads`` onnxruntime threads (default: torch's).
    """

    def __init__(self, run_dir: str | Path, model: torch.nn.Module, state: dict, tta_flip: bool = False,
                 threads: int | None = None) -> None:
        import onnxruntime
        run_dir = Path(run_dir)
        model = model.to(memory_format=torch.contiguous_format).eval()
        channels, height, width = state["input_shape"]
        generator = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (CHECK_INPUTS, channels, height, width), dtype=torch.uint8, generator=generator)
        inputs = next(iter(TensorBatches(pixels, torch.zeros(len(pixels), dtype=torch.long), len(pixels),
                                         mean=state["mean"], std=state["std"])))[0]
        blob, self.source = self._saved_graph(run_dir), "file"
        if blob is None:
            blob, _ = _onnx(model, inputs[:2], state)
            self.source = "exported at load"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = model(inputs)
        check = compare(expected, self.logits(inputs))
        if not check["passed"]:
            raise CheckpointError(f"{run_dir}: the ONNX graph ({self.source}) does not reproduce the PyTorch "
                                  f"model ({mismatch(check)}); serve it with --backend torch, or export it again")
        self.tta_flip = tta_flip

    @staticmethod
    def _saved_graph(run_dir: Path) -> bytes | None:
        """The bytes of ``run_dir/model.onnx`` if its metadata vouches for them and ``best.pt`` is not newer."""
        path, meta_path, best = run_dir / "model.onnx", metadata_path(run_dir / "model.onnx"), run_dir / "best.pt"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            blob = path.read_bytes()
            fresh = not best.exists() or path.stat().st_mtime >= best.stat().st_mtime
        except (OSError, ValueError):
            return None
        ok = (fresh and meta.get("format") == "onnx" and (meta.get("check") or {}).get("passed") is True
              and meta.get("sha256") == hashlib.sha256(blob).hexdigest())
        return blob if ok else None

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits [N, K] of normalized float32 inputs [N, C, H, W]."""
        (out,) = self.session.run(["logits"], {"input": inputs.float().contiguous().numpy()})
        return torch.from_numpy(out)

    def probabilities(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, K], averaged with the mirrored images' where the run predicts with TTA."""
        probs = self.logits(inputs).softmax(1)
        if self.tta_flip:
            probs = (probs + self.logits(inputs.flip(3)).softmax(1)) / 2
        return probs
