"""The exported ONNX model's reference client, run where nnlab and torch are not installed, predicts
as ``nnlab predict`` does on dataset-like and photo-like image files (RGBA, palette, 16-bit, JPEG, odd sizes)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnlab.commands.export import export
from nnlab.config import load_config, save_config
from nnlab.data.idx import read_idx
from nnlab.kinds.image import predict

CLIENT_NEEDS = ("numpy", "pillow", "onnxruntime")


def link_distribution(name: str, site: Path, done: set[str]) -> None:
    """Make the installed distribution ``name`` and what it requires (no extras) importable from
    ``site`` by symlinking its files' top-level entries (inside a namespace package, its own
    subpackages only): the packages pip would install, from this machine, in a fraction of a second."""
    from packaging.requirements import Requirement
    dist = importlib.metadata.distribution(name)
    if dist.metadata["Name"].lower() in done:
        return
    done.add(dist.metadata["Name"].lower())
    root = Path(dist.locate_file(""))
    for file in dist.files or []:
        if file.parts[0] == "..":  # scripts in bin/
            continue
        namespace = len(file.parts) > 2 and (root / file.parts[0]).is_dir() \
            and not (root / file.parts[0] / "__init__.py").exists()
        entry = Path(*file.parts[:2]) if namespace else Path(file.parts[0])
        (site / entry).parent.mkdir(parents=True, exist_ok=True)
        if not (site / entry).exists() and (root / entry).exists():
            (site / entry).symlink_to(root / entry)
    for spec in dist.requires or []:
        requirement = Requirement(spec)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            link_distribution(requirement.name, site, done)


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory):
    """A virtualenv (no system site-packages, no pip) holding only numpy, Pillow and onnxruntime and
    their requirements, as installed here: neither nnlab nor torch can be imported from it."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    linked: set[str] = set()
    for name in CLIENT_NEEDS:
        link_distribution(name, site, linked)
    probe = subprocess.run([python, "-c", "import numpy, PIL, onnxruntime\nfor m in ('torch', 'nnlab'):\n"
                            "    try:\n        __import__(m); print(m)\n    except ImportError:\n        pass"],
                           capture_output=True, text=True, env=clean_env(), cwd=venv)
    assert probe.returncode == 0 and probe.stdout == "", probe.stderr  # the three import; torch, nnlab do not
    return python


def clean_env() -> dict[str, str]:
    """This process's environment without what would lead Python to packages outside the venv."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


def dataset_like(images: np.ndarray, folder: Path) -> list[Path]:
    """Test-split images as the 28x28 grey PNG files the model was trained on."""
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    return [folder / f"{i}.png" for i in range(len(images))]


def photo_like(images: np.ndarray, folder: Path) -> list[Path]:
    """The same images as a photo or a drawing would come: a dark object on white, 112x160 or odd
    sizes, enlarged, in RGB, RGBA (a transparent background), palette, 16-bit grey, JPEG."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, image in enumerate(images):
        height, width = [(160, 112), (91, 37), (53, 200), (300, 301), (29, 28)][i % 5]
        dark = Image.fromarray(255 - image).resize((min(width, height), min(width, height)), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (width, height), 255)
        canvas.paste(dark, ((width - dark.width) // 2, (height - dark.height) // 2))
        grey = np.asarray(canvas)
        rgb = np.stack([grey, np.clip(grey.astype(int) + rng.integers(-6, 7), 0, 255), grey], -1).astype(np.uint8)
        style = i % 6
        path = folder / f"{i}.{'jpg' if style == 5 else 'png'}"
        if style == 0:
            Image.fromarray(rgb).save(path)
        elif style == 1:  # a transparent background holding black: must be flattened onto white
            rgba = np.zeros((height, width, 4), np.uint8)
            rgba[..., 3] = 255 - grey
            Image.fromarray(rgba, mode="RGBA").save(path)
        elif style == 2:
            Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
        elif style == 3:
            Image.fromarray(grey.astype(np.uint16) * 257).save(path)
        elif style == 4:
            Image.fromarray(grey).save(path)
        else:
            Image.fromarray(rgb).save(path, quality=85)
        paths.append(path)
    return paths


def agreement(python: Path, exported: Path, files: list[Path]) -> tuple[int, float]:
    """How many of ``files`` the client (run by ``python`` in the export's folder) gives the top class
    ``nnlab predict`` gives, and the largest difference of their top probabilities."""
    run = subprocess.run([python, "nnlab_client.py", exported.name, *map(str, files), "--top-k", "1"],
                         capture_output=True, text=True, env=clean_env(), cwd=exported.parent, timeout=120)
    assert run.returncode == 0, run.stderr
    theirs = json.loads(run.stdout)
    ours = predict(json.loads(exported.with_name(exported.name + ".json").read_text())["run_dir"], files, top_k=1)
    same = sum(a["top"][0]["class"] == b["top"][0]["class"] for a, b in zip(theirs, ours))
    diff = max(abs(a["top"][0]["probability"] - b["top"][0]["probability"]) for a, b in zip(theirs, ours))
    return same, diff


@pytest.mark.parametrize("tta", [False, True])
def test_the_reference_client_without_nnlab_or_torch_predicts_as_nnlab_predict(
        clean_python, image_run, tmp_path, tta):
    run = shutil.copytree(image_run, tmp_path / "run")
    config = load_config(run / "config.json")
    config.tta = tta
    save_config(config, run / "config.json")
    meta = export(run, "onnx", out=tmp_path / "export" / "model.onnx")
    assert meta["tta_flip"] is tta and meta["client"]["needs"] == list(CLIENT_NEEDS)
    assert (tmp_path / "export" / "nnlab_client.py").is_file()
    test_images = read_idx(Path(config.data) / "t10k-images-idx3-ubyte.gz")[:50]
    for style, make in (("dataset", dataset_like), ("photo", photo_like)):
        same, diff = agreement(clean_python, tmp_path / "export" / "model.onnx", make(test_images, tmp_path / style))
        assert same >= 49 and diff < 1e-4, (style, same, diff)


def test_the_metadata_lists_every_preprocessing_step_and_the_versions(image_run, tmp_path):
    import torch

    import nnlab
    meta = export(image_run, "torchscript", out=tmp_path / "m.pt")
    steps = meta["preprocess"]
    assert list(steps) == ["from", "decode", "high_depth", "alpha", "colour", "background", "fit", "invert",
                           "normalize", "tta_flip"]
    assert "BILINEAR" in steps["fit"] and "onto opaque white" in steps["alpha"] and "above 127" in steps["invert"]
    assert meta["nnlab_version"] == nnlab.__version__ and meta["torch_version"] == torch.__version__
    assert "client" not in meta and not (tmp_path / "nnlab_client.py").exists()  # the client runs ONNX files


def test_the_client_reports_a_bad_image_in_one_line(image_run, tmp_path):
    export(image_run, "onnx", out=tmp_path / "model.onnx")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    run = subprocess.run([sys.executable, "nnlab_client.py", "model.onnx", "broken.png"], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and len(run.stderr.strip().splitlines()) == 1
