"""The stored lesson notebooks (issue 31): each is its source's cells, and its saved outputs are what a
reader on a code host should see. Running them is nbmake's part of the suite (notebooks/conftest.py)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stored() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_twelve_lessons_each_built_from_its_source():
    build = build_module()
    assert [s.stem for s in build.sources()] == [p.stem for p in stored()]
    assert len(stored()) == 12
    assert [build.target(s).name for s in build.sources() if build.stale(s)] == []  # else: python notebooks/build.py


@pytest.mark.parametrize("path", stored(), ids=lambda p: p.stem)
def test_a_stored_notebook_ran_without_error_says_where_and_shows_its_pictures_as_png(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    first = "".join(o.get("text", "") for o in code[0].outputs if o.output_type == "stream")
    assert re.search(r"executed \d{4}-\d\d-\d\d \d\d:\d\d .* on .*, \d+ cores", first), first
    assert all(cell.outputs for cell in code[:1])
    for cell in code:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:200]
        for output in cell.outputs:
            text = str(output.get("data", {}).get("text/plain", ""))
            if text.startswith("<Figure size"):
                assert "image/png" in output.data, f"{path.name}: a figure stored as text: {cell.source[:200]}"


def test_no_lesson_shows_a_picture_by_reading_a_file_back():
    for source in sorted((NOTEBOOKS / "src").glob("*.py")):
        text = source.read_text(encoding="utf-8")
        assert not re.search(r"IPython\.display import .*\bImage\b|imread\(|Image\.open\(", text), source.name
