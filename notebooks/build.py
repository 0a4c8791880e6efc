"""The lesson notebooks from their sources: ``notebooks/src/NN_name.py`` (jupytext's percent format,
easy to review and diff) -> ``notebooks/NN_name.ipynb``, and their execution.

    python notebooks/build.py                  # write every .ipynb from its .py (outputs of unchanged cells kept)
    python notebooks/build.py --check          # exit 1 naming each .ipynb whose cells differ from its .py
    python notebooks/build.py --execute [NN]   # also run them (all, or those whose names start with NN),
                                               # one at a time, and save them with their outputs

``--execute`` runs each notebook in a kernel of this Python (the virtualenv's), from ``notebooks/``,
as ``make test`` runs them (nbmake), but keeps the outputs: in full mode unless ``NNLAB_QUICK=1`` is
set. Each notebook's first cell prints the date, the host and the mode it ran in.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def sources() -> list[Path]:
    """The lesson sources, in lesson order."""
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def target(source: Path) -> Path:
    return HERE / (source.stem + ".ipynb")


def convert(source: Path) -> nbformat.NotebookNode:
    """The notebook of ``source``, with the outputs of the cells the stored notebook has unchanged."""
    notebook = jupytext.read(source, fmt="py:percent")
    notebook.metadata["kernelspec"] = KERNELSPEC
    notebook.metadata.pop("jupytext", None)
    stored = target(source)
    if stored.is_file():
        notebook = combine_inputs_with_outputs(notebook, nbformat.read(stored, as_version=4), fmt="py:percent")
        notebook.metadata.pop("jupytext", None)
    return notebook


def cells_of(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def stale(source: Path) -> bool:
    """True where the stored notebook is missing or its cells are not its source's."""
    stored = target(source)
    if not stored.is_file():
        return True
    return cells_of(jupytext.read(source, fmt="py:percent")) != cells_of(nbformat.read(stored, as_version=4))


def execute(path: Path, timeout: int) -> float:
    """Run the notebook ``path`` top to bottom in a fresh kernel of this Python and save it with its
    outputs; returns the seconds it took. A cell that raises stops it (the error stays in the
    notebook, which is saved all the same) and raises ``CellExecutionError``."""
    from nbclient import NotebookClient
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name=KERNELSPEC["name"], store_widget_state=False,
                            resources={"metadata": {"path": str(HERE)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = stored_outputs(cell.outputs)
        nbformat.write(notebook, path)
    return time.perf_counter() - start


def stored_outputs(outputs: list) -> list:
    """The outputs a reader of the saved notebook sees: the progress bars left out (live widgets, each
    closed at its epoch's end: the epoch's line stays), the pieces of each stream joined, and a text
    bar's carriage-return redraws reduced to what a terminal would show."""
    kept: list = []
    for output in outputs:
        if output.output_type == "display_data" and WIDGET_VIEW in output.get("data", {}):
            continue
        if output.output_type == "stream" and kept and kept[-1].output_type == "stream" \
                and kept[-1].name == output.name:
            kept[-1].text += output.text
            continue
        kept.append(output)
    for output in kept:
        if output.output_type == "stream" and "\r" in output.text:
            output.text = "\n".join(line.rsplit("\r", 1)[-1] for line in output.text.split("\n"))
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which notebooks differ from their sources")
    parser.add_argument("--execute", nargs="*", metavar="NN", help="run the notebooks (all, or these prefixes)")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds a cell may take (default 4 h)")
    args = parser.parse_args(argv)
    if args.check:
        differing = [target(s).name for s in sources() if stale(s)]
        for name in differing:
            print(f"{name} differs from src/{name[:-6]}.py: run python notebooks/build.py")
        return 1 if differing else 0
    for source in sources():
        nbformat.write(convert(source), target(source))
    if args.execute is None:
        return 0
    chosen = [s for s in sources() if not args.execute or any(s.stem.startswith(p) for p in args.execute)]
    for source in chosen:
        seconds = execute(target(source), args.timeout)
        print(f"{target(source).name}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
