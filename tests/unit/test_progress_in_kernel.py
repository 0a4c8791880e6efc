"""The progress display of ``nnlab.fit`` in a real Jupyter kernel (issue 31, part 5).

Each test starts a kernel of this Python (jupyter_client's ``python3``: the virtualenv's), runs a
3-epoch ``nnlab.fit`` of 40 batches an epoch in it, and reads the messages the kernel sends the
notebook. The bar must be one updating thing, not a line per batch: with ipywidgets, one widget
per epoch, updated in place and closed at the epoch's end; without (ipywidgets hidden from the
kernel), one text line redrawn with carriage returns. Either way the notebook gets one plain line
per epoch, and a fit whose ``stream`` is a log file writes one line per epoch there and nothing
else: no bar's redraws in a file. A sequence model's bar (outputs not one row of class scores per
target, as a translation's) shows its loss alone.
"""
from __future__ import annotations

import io
import os

import jupyter_client
import torch
from torch.utils.data import TensorDataset

EPOCHS, BATCHES = 3, 40
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

FIT = f"""
import io, sys, torch, nnlab
from torch.utils.data import TensorDataset
g = torch.Generator().manual_seed(0)
x = torch.randn({BATCHES * 16}, 4, generator=g)
y = (x[:, 0] > 0).long()
def fit(out, **kw):
    return nnlab.fit(torch.nn.Linear(4, 2), TensorDataset(x, y), TensorDataset(x[:64], y[:64]), epochs={EPOCHS},
                     batch_size=16, out=out, tensorboard=False, plots=False, **kw)
"""


def run_in_kernel(code: list[str], env: dict[str, str] | None = None) -> list[list[dict]]:
    """Run each piece of ``code`` in one fresh kernel; the iopub messages of each (status and input left out)."""
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        replies = []
        for piece in code:
            messages: list[dict] = []
            reply = client.execute_interactive(piece, timeout=300, output_hook=messages.append)
            assert reply["content"]["status"] == "ok", "\n".join(reply["content"].get("traceback", []))
            replies.append([m for m in messages if m["msg_type"] not in ("status", "execute_input")])
        return replies
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def stream_text(messages: list[dict], name: str = "stderr") -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == name)


def epoch_lines(text: str) -> list[str]:
    """The finished lines of ``text`` (a bar's carriage-return redraws erased, as a terminal or notebook shows them)."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")[:-1]]


def hide_ipywidgets(tmp_path) -> dict[str, str]:
    """An environment whose kernel cannot import ipywidgets (as where it is not installed)."""
    hidden = tmp_path / "no-ipywidgets"
    hidden.mkdir()
    (hidden / "ipywidgets.py").write_text("raise ImportError('hidden by the test')\n")
    return {"PYTHONPATH": str(hidden)}


def fit_twice(tmp_path, env: dict[str, str] | None = None) -> tuple[list[dict], str]:
    """In one kernel: a fit showing its progress in the notebook (its messages), then one logging to
    a file (the file's text)."""
    log = tmp_path / "train.log"
    shown, logged = run_in_kernel([FIT + f"fit({str(tmp_path / 'shown')!r})",
                                   f"with open({str(log)!r}, 'w') as log:\n    fit({str(tmp_path / 'logged')!r}, stream=log)"],
                                  env)
    assert not [m for m in logged if m["msg_type"] in ("display_data", "comm_open")]  # no bar for a log file
    return shown, log.read_text()


def assert_epoch_lines(lines: list[str]) -> None:
    assert [line.split()[:2] for line in lines] == [["epoch", f"{e}/{EPOCHS}"] for e in range(1, EPOCHS + 1)]


def test_fit_in_a_kernel_shows_one_updating_widget_per_epoch_and_logs_a_line_per_epoch(tmp_path):
    messages, log = fit_twice(tmp_path)
    displays = [m for m in messages if m["msg_type"] == "display_data" and WIDGET_VIEW in m["content"]["data"]]
    updates = [m for m in messages if m["msg_type"] == "comm_msg"]
    closes = [m for m in messages if m["msg_type"] == "comm_close"]
    assert len(displays) == EPOCHS                      # one bar an epoch, drawn once...
    assert len(updates) > EPOCHS * 5                    # ...and updated in place, not drawn again
    assert len(closes) == EPOCHS                        # each closed at its epoch's end
    kinds = [m["msg_type"] for m in messages if m["msg_type"] in ("display_data", "comm_close", "stream")]
    assert kinds == ["display_data", "comm_close", "stream"] * EPOCHS  # never two bars at once
    assert "\r" not in stream_text(messages)
    assert_epoch_lines(epoch_lines(stream_text(messages)))
    assert "\r" not in log
    assert_epoch_lines(log.splitlines())


def test_fit_in_a_kernel_without_ipywidgets_redraws_one_text_line_and_logs_a_line_per_epoch(tmp_path):
    messages, log = fit_twice(tmp_path, hide_ipywidgets(tmp_path))
    assert not [m for m in messages if m["msg_type"] in ("display_data", "comm_open")]
    text = stream_text(messages)
    assert text.count("\r") > EPOCHS * 5               # the bar is redrawn in place...
    # ...and ends no line: each line is an epoch's (after tqdm's one warning that ipywidgets is missing)
    assert_epoch_lines([line for line in epoch_lines(text) if "IProgress" not in line and "autonotebook" not in line])
    assert "\r" not in log
    assert_epoch_lines(log.splitlines())


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so that the bar is drawn into it."""

    def isatty(self) -> bool:
        return True


class Tagger(torch.nn.Module):
    """Logits [N, classes, T] for targets [N, T]: a sequence model's shapes (translation, tagging)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 8)
        self.out = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(x)).permute(0, 2, 1)  # [N, T, C] -> [N, C, T]


def test_the_bar_of_a_sequence_model_shows_its_loss_and_no_accuracy(tmp_path):
    import nnlab
    x = torch.randint(5, (64, 7), generator=torch.Generator().manual_seed(0))  # [N, T]
    stream = Terminal()
    run = nnlab.fit(Tagger(), TensorDataset(x, x), epochs=1, batch_size=8, metric=None, out=tmp_path / "run",
                    stream=stream, tensorboard=False, plots=False)
    assert len(run.history) == 1
    assert "loss=" in stream.getvalue() and "acc=" not in stream.getvalue()
