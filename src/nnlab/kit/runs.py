"""A run as a Python object: what ``nnlab.load``, ``nnlab.train`` and ``nnlab.fit`` return.

A ``Run`` is a run directory (or a run kept in memory) and its kind: the config, the summary,
the per-epoch history, the model at its best epoch (loaded on first use, weights only), and the
methods its kind declares, each returning data or a matplotlib ``Figure`` that Jupyter shows
inline. The CLI commands and the server call the same methods, so a notebook and ``nnlab
predict RUN ...`` give the same answers. A method the kind lacks raises one ``ConfigError``
naming the kind and the methods it has.
"""
from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from nnlab.config import load_config
from nnlab.errors import CheckpointError, ConfigError
from nnlab.files import figure_png
from nnlab.kit.kind import Kind


class Run:
    """A trained (or interrupted) run: ``config``, ``summary``, ``history``, ``model`` and its kind's methods.

    Open one with ``nnlab.load(RUN_DIR)``; ``nnlab.train`` and ``nnlab.fit`` return one.
    """

    def __init__(self, run_dir: str | Path | None, kind: Kind, *, config: Any = None, model: nn.Module | None = None,
                 summary: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None,
                 loss: Callable | None = None, device: torch.device | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.kind = kind
        self._config = config
        self._model = model
        self._state: dict[str, Any] | None = None
        self._summary = summary
        self._history = history
        self.loss = loss
        self.device = device if device is not None else torch.device("cpu")

    @classmethod
    def open(cls, run_dir: str | Path, kind: Kind, model: nn.Module | None = None) -> "Run":
        """The run in ``run_dir`` (its ``config.json`` must exist); ``model`` for runs whose model is your code."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            raise CheckpointError(f"{run_dir}: not an nnlab run directory (no config.json)")
        run = cls(run_dir, kind, config=load_config(run_dir / "config.json"))
        if model is not None:
            run._model, run._state = kind.load_weights(run_dir, model)
        return run

    # --- what every run has ------------------------------------------------------------------------

    @property
    def config(self) -> Any:
        if self._config is None:
            self._config = load_config(self._need_dir("config") / "config.json")
        return self._config

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` (empty for a run that has not finished)."""
        if self._summary is None and self.run_dir is not None and (self.run_dir / "summary.json").is_file():
            self._summary = json.loads((self.run_dir / "summary.json").read_text(encoding="utf-8"))
        return self._summary or {}

    @property
    def history(self) -> list[dict[str, Any]]:
        """One row per finished epoch (``metrics.jsonl``)."""
        if self._history is None:
            rows = []
            path = self.run_dir / "metrics.jsonl" if self.run_dir is not None else None
            if path is not None and path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:  # a torn last line of a killed run
                        break
            self._history = rows
        return self._history

    @property
    def model(self) -> nn.Module:
        """The model at its best epoch, in eval mode (loaded from ``best.pt``, weights only, on first use)."""
        if self._model is None:
            _, self._model, self._state = self.kind.load_run(self._need_dir("model"), self.device)
        return self._model

    @property
    def state(self) -> dict[str, Any]:
        """The best checkpoint's description of the model (classes, input size, vocabulary, ...)."""
        if self._state is None:
            self.model  # noqa: B018 (loads both)
        return self._state or {}

    @property
    def name(self) -> str:
        return self.run_dir.name if self.run_dir is not None else f"{self.kind.name} run in memory"

    def headline(self) -> str:
        """The line ``nnlab train`` prints for this run."""
        return self.kind.headline(self.summary)

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r}, kind={self.kind.name!r})"

    def _need_dir(self, what: str) -> Path:
        if self.run_dir is None:
            raise ConfigError(f"{what}: this run was kept in memory (no run directory)")
        return self.run_dir

    def _need(self, capability: str, method: str) -> Path:
        if not self.kind.supports(capability):
            raise self.kind.lacks(method, self.run_dir)
        return self._need_dir(method)

    # --- scores and predictions ----------------------------------------------------------------------

    def evaluate(self, data: Any = None, **options: Any) -> dict[str, Any]:
        """Score the best model: on the run's own test split (``data`` None, or a dataset path), exactly as
        ``nnlab eval`` does; or on ``data`` given in memory (a ``Dataset``, ``DataLoader`` or sized iterable
        of ``(x, y)`` batches): the mean loss and, for a classifier, the accuracy."""
        if data is None or isinstance(data, (str, Path)):
            return self.kind.evaluate(self._need_dir("evaluate"), data_path=None if data is None else str(data),
                                      **options)
        from nnlab.kit.api import evaluate_on
        return evaluate_on(self, data, **options)

    def predict(self, inputs: Any, top_k: int = 3, **options: Any) -> Any:
        """Predictions for what the kind's ``nnlab predict`` takes (image files, PIL images or uint8
        tensors for image runs; strings for names and text runs; a CSV for tabular runs), as the
        command gives them; a run of your own model returns its outputs for a tensor of inputs."""
        return self.kind.predict_run(self, inputs, top_k=top_k, **options)

    # --- by capability -----------------------------------------------------------------------------

    def interpret(self, split: str = "valid", top: int = 16, **options: Any) -> dict[str, Any]:
        """Confusion matrix, most-confused pairs, per-class precision/recall/F1 and the highest losses
        (``figures``: the confusion matrix and the top losses as matplotlib Figures)."""
        return self.kind.interpret(self._need("interpret", "interpret"), split=split, top=top, **options)

    def cam(self, image: Any, cls: str | None = None, **options: Any) -> dict[str, Any]:
        """Grad-CAM of the best model on ``image`` for class ``cls`` (default: the predicted one);
        ``figure`` is the heat-map overlay."""
        return self.kind.cam(self._need("cam", "cam"), image, class_name=cls, **options)

    def filters(self, image: Any = None, **options: Any) -> dict[str, Any]:
        """The first (or ``layer=``) conv layer's filters, and ``image``'s feature maps there, as figures."""
        return self.kind.filters(self._need("filters", "filters"), image=image, **options)

    def sample(self, prime: str | None = None, length: int = 500, temperature: float = 0.8,
               top_k: int | None = None, seed: int = 0, **options: Any) -> dict[str, Any]:
        """Text (or names) drawn from the model, as ``nnlab sample`` draws it for the same seed."""
        return self.kind.sample(self._need("sample", "sample"), prime=prime, length=length,
                                temperature=temperature, top_k=top_k, seed=seed, **options)

    def translate(self, sentences: str | Sequence[str], beam: int = 1, **options: Any) -> list[dict[str, Any]]:
        """Translations of ``sentences`` (greedy, or a beam of ``beam``), as ``nnlab translate`` gives them."""
        return self.kind.translate(self._need("translate", "translate"), as_list(sentences), beam=beam, **options)

    def export(self, format: str, path: str | Path | None = None, **options: Any) -> dict[str, Any]:
        """Export the best model as ``format`` (torchscript, onnx, safetensors), checked against PyTorch."""
        return self.kind.export(self._need("export", "export"), format, out=path, **options)

    def summary_table(self, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        """Per layer: output shape, parameters and multiply-adds of the model on one input."""
        return self.kind.summary_table(self._need("summary", "summary_table"), input_shape)

    def resume(self, stream: Any = None, **overrides: Any) -> "Run":
        """Continue this interrupted run to its end (``overrides`` applied); returns the finished run."""
        run_dir = self._need("resume", "resume")
        self.kind.resume(run_dir, overrides, stream)
        return Run.open(run_dir, self.kind, model=self._model if self.kind.name == "custom" else None)

    # --- pictures ------------------------------------------------------------------------------------

    def plot_curves(self) -> Any:
        """Loss and accuracy per epoch, train and valid (a matplotlib Figure)."""
        from nnlab.inspection.plots import curves_figure
        return curves_figure(self.history)

    def plot_lr(self) -> Any:
        """The learning rate of every step (from ``lr.csv``), or ``None`` where none was recorded."""
        from nnlab.inspection.plots import lr_figure_from_csv
        return lr_figure_from_csv(self._need_dir("plot_lr") / "lr.csv")

    def plot_confusion(self, normalize: bool = True) -> Any:
        """The test confusion matrix of a classifier's summary (a Figure)."""
        from nnlab.inspection.plots import confusion_figure
        summary = self.summary
        if "confusion" not in summary or "classes" not in summary:
            raise self.kind.lacks("plot_confusion", self.run_dir)
        return confusion_figure(torch.tensor(summary["confusion"]), summary["classes"], normalize=normalize)

    def show_results(self, n: int = 16) -> Any:
        """``n`` test examples with their true and predicted labels, mistakes marked (a Figure)."""
        self._need("show", "show_results")
        return self.kind.results(self, n)

    def _repr_html_(self) -> str:
        """Jupyter's view: the headline, the key settings and the curves."""
        config = self.config
        keys = ("recipe", "kind", "model", "dataset", "epochs", "batch_size", "lr", "optimizer", "schedule", "seed",
                "time_budget")
        rows = "".join(f"<tr><td>{k}</td><td>{html.escape(str(getattr(config, k)))}</td></tr>"
                       for k in keys if getattr(config, k, None) not in (None, ""))
        picture = ""
        if self.history:
            png = figure_png(self.plot_curves(), dpi=60)
            picture = f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
        head = html.escape(self.headline() or "not finished")
        return (f"<div><b>{html.escape(self.name)}</b> ({html.escape(self.kind.what)}): {head}"
                f"<table>{rows}</table>{picture}</div>")


class Result(dict):
    """What a ``Run`` method that draws returns (``cam``, ``filters``, ``interpret``): the dict the CLI
    command prints with ``--json`` (the paths of the PNGs it wrote included), and its pictures as
    matplotlib Figures in ``figures`` (name -> Figure; ``figure`` is the first), which Jupyter shows
    inline. The figures are not among the dict's items, so that ``json.dumps(result)`` stays the
    command's output; ``result["figures"]`` and ``result["figure"]`` reach them as well, as they do in
    the result of ``nnlab.interpret(run, data, out=None)``."""

    def __init__(self, items: dict[str, Any], figures: dict[str, Any]) -> None:
        super().__init__(items)
        self.figures = dict(figures)

    @property
    def figure(self) -> Any:
        return next(iter(self.figures.values()), None)

    def __missing__(self, key: str) -> Any:
        if key == "figures" or (key == "figure" and self.figures):
            return getattr(self, key)
        raise KeyError(key)

    def _repr_html_(self) -> str:
        pictures = "".join(f'<img src="data:image/png;base64,{base64.b64encode(figure_png(fig, 72)).decode()}"/>'
                           for fig in self.figures.values())
        return f"<div>{pictures}<pre>{html.escape(json.dumps(dict(self), indent=1)[:4000])}</pre></div>"


def show_figures_inline() -> None:
    """In IPython (Jupyter), show a bare matplotlib ``Figure`` as a PNG where nothing else does.

    nnlab draws with matplotlib's object API (``Figure()``, never pyplot), and IPython shows a
    ``Figure`` as a picture only once pyplot's inline backend has registered its formatter, which it
    does when pyplot is imported; without it a cell that ends in ``run.plot_curves()`` prints
    ``<Figure size ...>``. A formatter already registered (the inline backend's, or the user's) is kept.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    from matplotlib.figure import Figure
    formatter = shell.display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        formatter.for_type(Figure, figure_png)


show_figures_inline()


def as_list(inputs: Any) -> list[Any]:
    """One input or several, as a list (a string or path is one input, never its characters)."""
    if isinstance(inputs, (str, Path)) or not isinstance(inputs, (list, tuple)):
        return [inputs]
    return list(inputs)
