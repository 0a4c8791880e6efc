"""Screenshots of the nnlab studio (``nnlab serve``'s page) for the README: ``make screenshots``.

Trains a few small runs in seconds each (a conv net for one epoch on 6,000 real Fashion-MNIST images,
77.9% test accuracy; a names classifier pooling by attention; a char-RNN on part of Tiny Shakespeare;
the same char-RNN stopped after one epoch, so the runs view has an interrupted run), serves them with
``nnlab serve``'s app on a loopback port, drives Debian's Chromium through Playwright and writes
``docs/studio-image.png``, ``docs/studio-names.png`` and ``docs/studio-runs.png``.

``tests/e2e/test_browser.py`` builds its runs, server and browser with the functions here.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FASHION_FILES = {"train-images-idx3-ubyte": 6000, "train-labels-idx1-ubyte": 6000,  # written uncompressed
                 "t10k-images-idx3-ubyte": 2000, "t10k-labels-idx1-ubyte": 2000}
TEXT_CHARS = 150_000          # of Tiny Shakespeare: a char-RNN learns words from it in seconds
MADE_UP_TEXT = "".join(f"the {w} sat on the mat. " for w in ("cat", "dog", "bat", "rat", "hen")) * 200
VIEWPORT = {"width": 960, "height": 760}


def fashion_subset(folder: Path) -> Path:
    """The first 6,000 training and 2,000 test images of the real Fashion-MNIST, written uncompressed under
    ``folder`` (a ``DataError`` where the real data cannot be found without a download)."""
    from nnlab.data.idx import read_idx, write_idx
    from nnlab.data.sources import locate
    from nnlab.data.vision import FASHION_MNIST
    directory, _ = locate(FASHION_MNIST.spec, download=False)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in FASHION_FILES.items():
        source = directory / f"{name}.gz" if (directory / f"{name}.gz").exists() else directory / name
        # Only the records kept are decompressed (all 60,000 took 3 of the fixture's 11 s), and they
        # are written uncompressed (gzip took 2 s).
        write_idx(folder / name, read_idx(source, limit=n))
    return folder


def made_up_names(folder: Path) -> Path:
    """Two made-up 'languages' told apart by their endings (-ov, -ini): a names folder trained in a second."""
    gen = torch.Generator().manual_seed(0)
    stems = ["".join("bcdfgklmnprstvz"[i] for i in row).capitalize()
             for row in torch.randint(15, (400, 4), generator=gen).tolist()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Ovian.txt").write_text("\n".join(s + "ov" for s in stems[:200]), encoding="utf-8")
    (folder / "Inian.txt").write_text("\n".join(s + "ini" for s in stems[200:]), encoding="utf-8")
    return folder


def text_file(path: Path, real: bool) -> Path:
    """The start of Tiny Shakespeare (``real``, located as ``nnlab train shakespeare-lstm`` does) or a made-up text."""
    from nnlab.data.text import load_corpus
    path.write_text(load_corpus()[0][:TEXT_CHARS] if real else MADE_UP_TEXT, encoding="utf-8")
    return path


def train_demo_runs(base: Path, real_names: bool = False, real_text: bool = False) -> Path:
    """``base/runs`` with four runs: ``fashion-cnn`` (image), ``names-attention`` (names, attention
    pooling), ``shakespeare-lstm`` (char-RNN) and ``shakespeare-cut`` (interrupted after 1 of 2 epochs)."""
    from nnlab.data.names import default_names_dir
    from nnlab.recipes import train
    runs = base / "runs"

    def tiny(recipe: str, out: str, **overrides: Any) -> dict[str, Any]:
        # One thread: small models on a shared 2-core host ran up to 8x slower with two.
        return train(recipe, out=runs / out, stream=io.StringIO(),
                     overrides={"threads": 1, "tensorboard": False, "device": "cpu", **overrides})

    image = tiny("fashion-cnn", "fashion-cnn", data=str(fashion_subset(base / "fashion-mnist")), epochs=1,
                 precision="fp32", channels_last=False, augment=[], **{"model_args.widths": (16, 32, 32),
                                                                       "model_args.head_hidden": 64})
    names = default_names_dir()[0] if real_names else made_up_names(base / "names")
    tiny("names-rnn", "names-attention", data=str(names), epochs=3 if real_names else 4, hidden_size=32, embed=16,
         batch_size=64, lr=1e-2, pooling="attention", dropout=0.0, label_smoothing=0.0)
    text = text_file(base / "text.txt", real_text)
    lm = {"data": str(text), "layers": 1, "hidden_size": 96, "embed": 32, "bptt": 64, "batch_size": 32,
          "eval_batch_size": 16, "lr": 1e-2}
    tiny("shakespeare-lstm", "shakespeare-lstm", **lm, epochs=2)
    tiny("shakespeare-lstm", "shakespeare-cut", **lm, epochs=2, stop_after_epochs=1)
    if image["test_accuracy"] < 0.75:
        raise RuntimeError(f"the image run reached only {image['test_accuracy']:.1%} test accuracy")
    return runs


@contextlib.contextmanager
def serving(run_dirs: list[Path], runs_root: Path) -> Iterator[str]:
    """``nnlab serve``'s app for ``run_dirs`` and the runs under ``runs_root`` on a free loopback port; yields its URL."""
    import uvicorn

    from nnlab.commands.serve import create_app
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(run_dirs, device="cpu", runs_root=runs_root),
                                           host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox"] if os.geteuid() == 0 else [])


def wait_for(page: Any, expression: str, arg: Any = None, timeout: float = 30.0) -> None:
    """Poll ``expression`` (a JS function of ``arg``) until it is true. Playwright's own
    ``wait_for_function`` evaluates strings, which the page's policy (no eval) rightly refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout:g} s: {expression}")
        time.sleep(0.05)


def sample_image(runs: Path, path: Path, label: int = 1) -> Path:
    """The first test image of class ``label`` (1: Trouser) of the image run's data, as a PNG at ``path``."""
    from PIL import Image

    from nnlab.data.idx import read_idx
    folder = runs.parent / "fashion-mnist"
    images, labels = read_idx(folder / "t10k-images-idx3-ubyte"), read_idx(folder / "t10k-labels-idx1-ubyte")
    index = int((labels == label).nonzero()[0][0])
    Image.fromarray(images[index]).save(path)
    return path


def shrink(path: Path, colours: int = 96) -> Path:
    """Rewrite the PNG at ``path`` with a palette of ``colours``: a screenshot a few times smaller, alike to the eye."""
    from PIL import Image
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs", help="folder of the PNGs (default docs/)")
    args = parser.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nnlab-screenshots-") as tmp, \
            contextlib.ExitStack() as stack:
        started = time.perf_counter()
        train_demo_runs(Path(tmp), real_names=True, real_text=True)
        print(f"trained the demo runs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        out = out.resolve()
        stack.enter_context(contextlib.chdir(tmp))  # the page then names the folder as a user would: runs/
        runs = Path("runs")
        served = [runs / name for name in ("fashion-cnn", "names-attention", "shakespeare-lstm")]
        url = stack.enter_context(serving(served, runs))
        browser = launch(stack.enter_context(sync_playwright()))
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{url}#/models/fashion-cnn")
        page.set_input_files("#file", str(sample_image(runs, Path(tmp) / "trouser.png")))
        wait_for(page, "() => document.querySelector('#cam').naturalWidth > 0")
        page.screenshot(path=str(out / "studio-image.png"), full_page=True)
        page.goto(f"{url}#/models/names-attention")
        page.fill("#texts", "Dostoevsky\nNakamura\nO'Brien\nRossi")
        page.click("#classify")
        expect(page.locator(".text-result")).to_have_count(4, timeout=15_000)
        page.screenshot(path=str(out / "studio-names.png"), full_page=True)
        page.set_viewport_size({"width": VIEWPORT["width"], "height": 420})
        page.goto(f"{url}#/runs")
        expect(page.locator("tr.run")).to_have_count(4, timeout=15_000)
        page.screenshot(path=str(out / "studio-runs.png"))
        browser.close()
    for name in ("studio-image.png", "studio-names.png", "studio-runs.png"):
        path = shrink(out / name)
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
