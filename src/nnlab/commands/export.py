"""``nnlab export``: a thin shell over ``Run.export`` (the exporters and the ONNX predictor the server
uses live in ``nnlab.kinds.export``), after the table of kinds says the run can be exported."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nnlab.kinds import load, require
from nnlab.kinds.export import EXPORTERS, FORMATS, OnnxPredictor

__all__ = ["EXPORTERS", "FORMATS", "OnnxPredictor", "export"]


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None,
           data_path: str | Path | None = None) -> dict[str, Any]:
    """Export the run's best model as ``fmt`` to ``out`` (default ``RUN_DIR/model.<ext>``), checked against
    PyTorch on real test images; returns the metadata (also ``FILE.json``)."""
    require(run_dir, "export", "export")  # the table of kinds says who can be exported
    return load(run_dir).export(fmt, out, data_path=data_path)
