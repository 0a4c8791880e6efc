"""What a kind of run is: the base class every kind derives from (``nnlab.kinds`` holds the table).

A kind owns everything that differs between, say, an image classifier and a char-level language
model: its config class, ``train``/``evaluate``/``predict``, the metric its runs are known by
(``headline``), its own ``nnlab train`` options, the hooks the server calls, and the
capabilities it declares (resume, DDP, serve, export, cam, ...). The CLI, the server, ``nnlab
runs``, the sweeps and ``nnlab.load``'s ``Run`` ask a kind; none of them lists kinds or probes one
with ``hasattr``.

Why a base class and not a ``Protocol``: kinds share behaviour, not just a shape (the headline's
timing parts, the capability checks and their error, the option groups of ``nnlab train``), and a
base class gives that once; an undeclared capability's method then fails loudly here instead of
being silently absent. Kinds are stateless: the table holds one instance of each.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TextIO

from nnlab.errors import ConfigError

# What a kind can offer beyond train/evaluate/predict; each names a method of nnlab.load's Run (or,
# for resume, ddp, serve and lr-find, what `nnlab train --resume`, `--nproc`, `nnlab serve` and
# `nnlab lr-find` take).
CAPABILITIES = ("resume", "ddp", "serve", "export", "interpret", "cam", "filters", "summary", "sample",
                "translate", "lr-find", "show")
# The Run method each capability adds (the others are ways to train or serve, not methods; "show" also
# gives nnlab.show_batch of the kind's recipes).
CAPABILITY_METHODS = {"resume": "resume", "export": "export", "interpret": "interpret", "cam": "cam",
                      "filters": "filters", "summary": "summary_table", "sample": "sample",
                      "translate": "translate", "show": "show_results"}
# What every Run has, whatever its kind.
COMMON_METHODS = ("evaluate", "predict", "plot_curves", "plot_lr")


@dataclass(frozen=True)
class Option:
    """One ``nnlab train`` flag of a kind: it sets the config field ``dest`` (``--set dest=...`` does too)."""

    flag: str
    dest: str
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None


# Flags several kinds share (one flag, declared once; each kind lists it among its options).
CSV_OPTION = Option("--csv", "csv", "tabular, perceptron, series and text-classify runs: the CSV file to train on")
TARGET_OPTION = Option("--target", "target", "tabular and perceptron runs: the column to predict")


class Kind:
    """One kind of run. Subclasses set the class attributes and implement ``train``, ``evaluate``,
    ``predict`` and ``load_run``, plus the method of each capability they declare."""

    name: ClassVar[str]
    what: ClassVar[str]                              # "image run", "names run", ... for messages
    config: ClassVar[type]                           # its RunConfig subclass
    capabilities: ClassVar[frozenset[str]] = frozenset()
    eval_options: ClassVar[tuple[str, ...]] = ()     # `nnlab eval` options beyond --data/--device
    predict_options: ClassVar[tuple[str, ...]] = ()  # `nnlab predict` options beyond inputs and --top-k
    sample_options: ClassVar[tuple[str, ...]] = ()   # `nnlab sample` options beyond the common ones
    options: ClassVar[tuple[Option, ...]] = ()       # its own `nnlab train` flags
    metrics: ClassVar[tuple[str, ...]] = ("test_accuracy",)  # summary keys its runs are known by, first found
    takes_text: ClassVar[bool] = False               # served predictions take strings (else image files)
    sample_continues: ClassVar[bool] = True          # sampling continues a text (else draws whole items)

    def __init_subclass__(cls, functions: tuple[Callable[..., Any], ...] = (), **kwargs: Any) -> None:
        """``functions``: the kind file's own functions that are this kind's methods of the same names
        (``class NamesKind(Kind, functions=(train, evaluate, predict, load_run))``)."""
        super().__init_subclass__(**kwargs)
        for function in functions:
            setattr(cls, function.__name__, staticmethod(function))
        unknown = set(cls.capabilities) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"kind {cls.__name__}: unknown capabilities {sorted(unknown)}; "
                             f"known: {', '.join(CAPABILITIES)}")

    def __repr__(self) -> str:
        return f"<kind {self.name}: {self.what}>"

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def methods(self) -> list[str]:
        """The methods of this kind's ``Run`` objects."""
        return [*COMMON_METHODS, *(method for capability, method in CAPABILITY_METHODS.items()
                                   if self.supports(capability))]

    def lacks(self, method: str, run_dir: str | Path | None = None) -> ConfigError:
        """The error for calling ``method`` on a run of this kind, which does not have it."""
        where = f"{run_dir} is " if run_dir is not None else ""
        return ConfigError(f"{method}: {where}a {self.what} (kind {self.name!r}), which has no {method}; "
                           f"its methods: {', '.join(self.methods())}")

    # --- the headline: the one score a run is known by, and the line the CLI prints ---------------

    def headline_metric(self, summary: dict[str, Any]) -> tuple[str, float] | None:
        """The metric a finished run is known by (the first of ``metrics`` its summary has), or ``None``."""
        for key in self.metrics:
            if isinstance(summary.get(key), (int, float)) and not isinstance(summary.get(key), bool):
                return key, float(summary[key])
        return None

    def scores(self, result: dict[str, Any]) -> list[str]:
        """The parts of the headline that give a summary's or an evaluation's scores."""
        if result.get("test_accuracy") is not None:
            return [f"test accuracy {result['test_accuracy']:.4f}"]
        return []

    def headline(self, result: dict[str, Any]) -> str:
        """One line: the scores, then the training time and speed where the result has them."""
        parts = self.scores(result)
        if "train_seconds" in result:
            parts.append(f"train {result['train_seconds']:.1f}s")
        if "images_per_s" in result:
            parts.append(f"{result['images_per_s']:.0f} img/s")
        return "  ".join(parts)

    # --- what every kind implements ------------------------------------------------------------

    def train(self, start: Any, stream: TextIO, dry_run: bool = False) -> dict[str, Any]:
        """Train the run ``start`` (a ``nnlab.kit.run.RunStart``) describes; returns its summary."""
        raise NotImplementedError

    def evaluate(self, run_dir: str | Path, data_path: str | None = None, device_name: str | None = None,
                 **options: Any) -> dict[str, Any]:
        """Reload the run's best model and score it on its test split, as training did."""
        raise NotImplementedError

    def predict(self, run_dir: str | Path, inputs: Sequence[Any], top_k: int = 3, **options: Any) -> Any:
        """Predictions for ``inputs`` of the kind's input type (files, strings, CSV rows)."""
        raise NotImplementedError

    def load_run(self, run_dir: str | Path, device: Any = "cpu") -> tuple[Any, Any, dict[str, Any]]:
        """The run's config, its model at the best epoch (eval mode) and the best checkpoint."""
        raise NotImplementedError

    def predict_run(self, run: Any, inputs: Any, top_k: int = 3, **options: Any) -> Any:
        """``Run.predict``: ``predict`` on the run's directory (a kind that takes objects in memory,
        PIL images or tensors, overrides this)."""
        from nnlab.kit.runs import as_list
        return self.predict(run.run_dir, as_list(inputs), top_k=top_k, **options)

    def load_weights(self, run_dir: str | Path, model: Any) -> tuple[Any, dict[str, Any]]:
        """``nnlab.load(RUN, model=...)``: only runs whose model is the user's own code take a model."""
        raise ConfigError(f"{run_dir} is a {self.what}: nnlab rebuilds its model from the run; give no model")

    def batch_figure(self, config: Any, n: int = 16) -> Any:
        """``nnlab.show_batch``: the first ``n`` training examples of a run of ``config``, with their labels."""
        raise self.lacks("show_batch")

    def results(self, run: Any, n: int = 16) -> Any:
        """``Run.show_results``: ``n`` test examples with their true and predicted labels (a Figure)."""
        raise self.lacks("show_results", run.run_dir)

    def resume(self, run_dir: str | Path, overrides: dict[str, Any] | None = None,
               stream: TextIO | None = None) -> dict[str, Any]:
        """Continue the interrupted run in ``run_dir`` to its end; returns its summary."""
        import sys
        from nnlab.kit.run import start_run
        with start_run(None, None, overrides, run_dir, kind=self) as start:  # locked while it trains
            return self.train(start, stream if stream is not None else sys.stderr)

    # --- by capability (the Run checks the capability before it calls) ---------------------------

    def lr_find(self, config: Any, out: Path, steps: int = 200, start_lr: float = 1e-7,
                end_lr: float = 10.0) -> dict[str, Any]:
        raise self.lacks("lr_find")

    def sample(self, run_dir: str | Path, **options: Any) -> dict[str, Any]:
        raise self.lacks("sample", run_dir)

    def translate(self, run_dir: str | Path, sentences: Sequence[str], **options: Any) -> list[dict[str, Any]]:
        raise self.lacks("translate", run_dir)

    def cam(self, run_dir: str | Path, image: Any, **options: Any) -> dict[str, Any]:
        raise self.lacks("cam", run_dir)

    def filters(self, run_dir: str | Path, **options: Any) -> dict[str, Any]:
        raise self.lacks("filters", run_dir)

    def interpret(self, run_dir: str | Path, **options: Any) -> dict[str, Any]:
        raise self.lacks("interpret", run_dir)

    def export(self, run_dir: str | Path, fmt: str, out: str | Path | None = None, **options: Any) -> dict[str, Any]:
        raise self.lacks("export", run_dir)

    def summary_table(self, run_dir: str | Path, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        raise self.lacks("summary_table", run_dir)

    # --- server hooks for kinds that take strings ------------------------------------------------

    def encode_inputs(self, state: dict[str, Any], inputs: Sequence[str]) -> Any:
        """The model's input tensor for ``inputs`` (kinds with ``takes_text``)."""
        raise self.lacks("encode_inputs")

    def input_tokens(self, state: dict[str, Any], inputs: Sequence[str]) -> list[list[str]]:
        """Each input's tokens as the model reads them (for attention weights per token)."""
        raise self.lacks("input_tokens")
