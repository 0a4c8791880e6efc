"""What every lesson notebook shares: quick mode, where its runs go, the header line, the datasets.

``NNLAB_QUICK=1`` (set by ``make test``) makes each lesson train for seconds: fewer epochs, a share of
each epoch's batches, smaller models. Every cell still runs, and the lesson's closing asserts use
thresholds that hold in both modes. Without it a lesson trains its recipe as documented.
"""
from __future__ import annotations

import atexit
import datetime
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from nnlab.kit.runs import show_figures_inline

QUICK = os.environ.get("NNLAB_QUICK", "") not in ("", "0")
# Quick runs go to a temporary folder, removed when the kernel exits; full runs to notebooks/runs/.
RUNS = Path(tempfile.mkdtemp(prefix="nnlab-lesson-")) if QUICK else Path("runs").resolve()
if QUICK:
    atexit.register(shutil.rmtree, RUNS, ignore_errors=True)


def quick(quick_value: Any, full_value: Any) -> Any:
    """``quick_value`` under ``NNLAB_QUICK=1``, else ``full_value``."""
    return quick_value if QUICK else full_value


def cpu_model() -> str:
    """The CPU's name as ``lscpu`` gives it (``platform.processor()`` where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, env={**os.environ, "LC_ALL": "C"})
        for line in out.stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def header(title: str) -> None:
    """Print what this execution ran on: the date, the host, its CPU and cores, torch, and the mode."""
    import torch

    import nnlab
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    mode = "QUICK mode (NNLAB_QUICK=1: seconds of training, not the recipe's result)" if QUICK else "full mode"
    print(f"{title}\nexecuted {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {platform.node()}: "
          f"{cpu_model()}, {os.cpu_count()} cores, {device}; torch {torch.__version__}, nnlab {nnlab.__version__}; "
          f"{mode}")


def dataset(name: str) -> str | None:
    """Where ``nnlab datasets`` finds ``name`` now, or None where it is found nowhere (printed either way)."""
    from nnlab.data.catalog import describe_all
    row = next(r for r in describe_all() if r["name"] == name)
    print(f"{name}: {row['location']}")
    return row["location"] if row["found"] else None


def text_or_standin() -> str | None:
    """``None`` where Tiny Shakespeare is found (the recipes read it themselves); else the path of a named
    stand-in: Debian's licence texts (/usr/share/common-licenses), joined into one English text file."""
    if dataset("text") is not None:
        return None
    licences = sorted(p for p in Path("/usr/share/common-licenses").glob("*") if p.is_file())
    if not licences:
        raise RuntimeError("neither Tiny Shakespeare (nnlab download text) nor a stand-in text was found")
    path = RUNS / "standin.txt"
    RUNS.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(p.read_text(encoding="utf-8", errors="replace") for p in licences), encoding="utf-8")
    print(f"STAND-IN: Tiny Shakespeare is absent; this lesson trains on {len(licences)} licence texts "
          f"of /usr/share/common-licenses ({path.stat().st_size:,} bytes), not on Shakespeare")
    return str(path)


# A bare matplotlib Figure shows as a PNG in the kernel (nnlab.kit.runs does it when IPython is already
# running as it is imported; a lesson may import nnlab first, so ask again here).
show_figures_inline()


def show(*pictures: Any) -> None:
    """Show matplotlib Figures inline (as image/png), and the figures of a run method's result."""
    from IPython.display import display
    from matplotlib.figure import Figure
    for picture in pictures:
        figures = getattr(picture, "figures", None)
        if figures is None and isinstance(picture, dict):  # nnlab.interpret(run, data)'s result
            figures = picture.get("figures")
        for figure in (figures.values() if isinstance(figures, dict) else [picture]):
            if not isinstance(figure, Figure):
                raise TypeError(f"show: expected matplotlib Figures, or a result holding them; got {type(figure).__name__}")
            display(figure)
