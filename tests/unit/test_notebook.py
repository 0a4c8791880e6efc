"""A run in Jupyter: in a headless kernel (this virtualenv's Python, started by nbclient), a ``Run`` shows
as HTML (headline, settings, curves) and its pictures, ``plot_curves()``, ``show_results()``, ``cam()``,
as PNGs, without the notebook importing pyplot or asking for ``%matplotlib inline``."""
from __future__ import annotations

import json

import pytest

from conftest import require_module

CELLS = [
    "import nnlab\nrun = nnlab.load({run!r})\nrun",
    "run.plot_curves()",
    "run.show_results(8)",
    "run.cam({image!r})",
]


def test_a_run_and_its_pictures_display_inline_in_a_headless_kernel(image_run, tmp_path):
    nbformat = require_module("nbformat", "jupyter")
    nbclient = require_module("nbclient", "jupyter")
    require_module("ipykernel", "jupyter")
    from PIL import Image

    from nnlab.data.vision import load_image_dataset
    image = tmp_path / "square.png"
    config = json.loads((image_run / "config.json").read_text())
    Image.fromarray(load_image_dataset("fashion-mnist", config["data"]).test_images[0, 0].numpy()).save(image)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(cell.format(run=str(image_run), image=str(image)))
                      for cell in CELLS]
    # the kernel named python3 is ipykernel's own: sys.executable, this virtualenv's Python
    nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = [{kind for output in cell.outputs for kind in output.get("data", {})} for cell in notebook.cells]
    errors = [output for cell in notebook.cells for output in cell.outputs if output.output_type == "error"]
    assert not errors, errors
    assert "text/html" in shown[0] and "<table>" in notebook.cells[0].outputs[0]["data"]["text/html"]
    assert all("image/png" in kinds for kinds in shown[1:3]), shown
    assert "text/html" in shown[3] and "data:image/png;base64," in notebook.cells[3].outputs[0]["data"]["text/html"]


@pytest.fixture(autouse=True)
def _kernel_threads(monkeypatch):
    """The kernel inherits the environment: one thread, as the test process has."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
