"""The web page in headless Chromium: upload a real Fashion-MNIST test image, read the label off the page.

Uses Debian's ``chromium`` (``make test`` installs it where apt and root are available) driven by
Playwright from PyPI, with no browser download. A small run trained on a subset of the real data is
served by a real uvicorn on a loopback port.
"""
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from nnlab.data.idx import read_idx, write_idx
from nnlab.data.sources import locate
from nnlab.data.vision import FASHION_MNIST, load_image_dataset
from nnlab.errors import DataError
from nnlab.kinds.image import predict
from nnlab.recipes import train

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """fashion-mlp trained for 3 epochs on 6,000 real Fashion-MNIST training images (~80% accuracy, seconds)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (make test does, as root)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    try:
        directory, _ = locate(FASHION_MNIST.spec, download=False)
    except DataError as error:
        pytest.skip(f"real Fashion-MNIST not available here: {error}")
    base = tmp_path_factory.mktemp("browser")
    subset = base / "fashion-mnist"
    subset.mkdir()
    for name, n in (("train-images-idx3-ubyte.gz", 6000), ("train-labels-idx1-ubyte.gz", 6000),
                    ("t10k-images-idx3-ubyte.gz", 2000), ("t10k-labels-idx1-ubyte.gz", 2000)):
        source = directory / name if (directory / name).exists() else directory / name.removesuffix(".gz")
        write_idx(subset / name, read_idx(source)[:n])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NNLAB_CACHE", str(base / "cache"))
        summary = train("fashion-mlp", out=base / "fashion", stream=io.StringIO(),
                        overrides={"epochs": 3, "data": str(subset), "device": "cpu"})
        data = load_image_dataset("fashion-mnist", subset)
    assert summary["test_accuracy"] > 0.75
    return base / "fashion", data


@pytest.fixture(scope="module")
def server(real_run):
    import uvicorn

    from nnlab.commands.serve import create_app
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app([real_run[0]], device="cpu"), host="127.0.0.1",
                                           port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def test_page_predicts_an_uploaded_real_test_image(real_run, server, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    run_dir, data = real_run
    index = int((data.test_labels == 1).nonzero()[0])  # the first trouser of the test split
    image = tmp_path / "trouser.png"
    Image.fromarray(data.test_images[index, 0].numpy()).save(image)
    expected = predict(run_dir, [image], top_k=5)[0]["top"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            page = browser.new_page()
            page.goto(server)
            expect(page.locator("#model option")).to_have_count(1)
            page.set_input_files("#file", str(image))
            expect(page.locator("tr.result")).to_have_count(5, timeout=15_000)
            label = page.locator("#label").inner_text()
            rows = [row.inner_text().split("\t")[0] for row in page.locator("tr.result").all()]
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            # A drawing on the canvas goes through the same endpoint and comes back as some class.
            box = page.locator("#canvas").bounding_box()
            page.mouse.move(box["x"] + 110, box["y"] + 40)
            page.mouse.down()
            page.mouse.move(box["x"] + 110, box["y"] + 240, steps=10)
            page.mouse.up()
            with page.expect_response(lambda response: "/predict/" in response.url) as answer:
                page.click("#predict-drawing")
            drawn = answer.value.json()["top"][0]["class"]
            expect(page.locator("#label")).to_have_text(drawn)
            error = page.locator("#error").inner_text()
            status = answer.value.status
        finally:
            browser.close()
    assert label == "Trouser" == expected[0]["class"]
    assert rows == [t["class"] for t in expected]
    assert status == 200 and drawn in data.classes and error == ""
    with Image.open(tmp_path / "page.png") as shot:
        assert shot.width >= 600 and shot.height >= 400
