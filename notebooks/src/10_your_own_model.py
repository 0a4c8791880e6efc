# %% [markdown]
# # 10. Your own model and your own data
#
# Everything a recipe gets (a run directory, best and last checkpoints, exact resume, curves, a
# summary, the LR finder, interpretation) is one call for any `nn.Module` and any
# `torch.utils.data.Dataset`: `nnlab.fit`. Here the data is scikit-learn's 1,797 handwritten
# digits (8x8 pixels, real scans bundled with scikit-learn) behind a `Dataset` of our own, and the
# model a small conv net of our own.

# %%
import json
import subprocess

import torch
from jupyter_client.manager import start_new_kernel
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset

import nnlab
from nnlab.inspection.plots import confusion_figure, lr_find_figure
from lesson import RUNS, header, quick

header("Lesson 10: your own model and data")

# %% [markdown]
# ## A Dataset and a model
# The model's code is kept as text too, so that a fresh kernel below can define the same class.

# %%
class Digits(Dataset):
    """scikit-learn's digits (rows ``rows``): images [1, 8, 8] scaled to 0..1, and their labels."""

    def __init__(self, rows: torch.Tensor) -> None:
        digits = load_digits()
        self.x = torch.tensor(digits.images, dtype=torch.float32)[rows, None] / 16
        self.y = torch.tensor(digits.target)[rows]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


MODEL = '''
class DigitNet(nn.Module):
    """Two 3x3 convolutions, a pooling, a linear head: 8x8 grey digits -> 10 classes."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(width * 4 * 4, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))
'''
exec(MODEL)

order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
train, valid, test = Digits(order[:1200]), Digits(order[1200:1500]), Digits(order[1500:])
print(len(train), len(valid), len(test), "digits;", sum(p.numel() for p in DigitNet().parameters()), "parameters")

# %% [markdown]
# ## The LR finder, then a run stopped half way and resumed
# `stop_after_epochs` ends the run as Ctrl-C or a killed job would (last.pt written after each
# epoch); `resume=` continues it, data order and all, to the end it would have had.

# %%
torch.manual_seed(0)
found = nnlab.lr_find(DigitNet(), train, out=RUNS / "digits-lr", steps=quick(50, 100), batch_size=64)
sweep = json.loads((RUNS / "digits-lr" / "lr_find.json").read_text())
print(f"suggested learning rate {found['suggested_lr']:.2e}")
lr_find_figure(sweep["lrs"], sweep["smoothed"], {"min/10": found["min_over_10_lr"], "steepest": found["steepest_lr"]})

# %%
epochs = quick(6, 20)
torch.manual_seed(0)
model = DigitNet()
half = nnlab.fit(model, train, valid, epochs=epochs, lr=3e-3, batch_size=64, out=RUNS / "digits",
                 stop_after_epochs=epochs // 2, tensorboard=False)
print("stopped after", len(half.history), "epochs:", half.summary)
run = nnlab.fit(model, train, valid, resume=RUNS / "digits")
print(f"resumed to {len(run.history)} epochs; valid accuracy {run.history[-1]['valid_acc']:.4f}")
run.plot_curves()

# %% [markdown]
# ## Scores, predictions and interpretation
# The run's model is at its best epoch. `evaluate` scores any data; `interpret` draws the
# confusion matrix, the most-confused pairs and the digits the model got most wrong.

# %%
scores = run.evaluate(test)
print("test:", scores)
probabilities = run.predict(test.x[:5]).softmax(1)
print("predicted", probabilities.argmax(1).tolist(), "true", test.y[:5].tolist())
classes = [str(d) for d in range(10)]
explained = nnlab.interpret(run, test, classes=classes, top=12)
print("most confused:", explained["most_confused"][:3])
confusion_figure(torch.tensor(explained["confusion"]), classes)

# %% [markdown]
# ## The run, opened in a fresh kernel
# `best.pt` holds weights and plain data, never pickled code, so a new process needs the class
# (defined anywhere: a notebook's `__main__` will do) and gives `nnlab.load` an instance of it.

# %%
code = f"""
import torch, nnlab
from torch import nn
{MODEL}
loaded = nnlab.load({str(run.run_dir)!r}, model=DigitNet())
x = torch.load({str(RUNS / 'test-x.pt')!r})
print(loaded.predict(x).argmax(1).tolist())
"""
torch.save(test.x, RUNS / "test-x.pt")
manager, client = start_new_kernel(kernel_name="python3", stderr=subprocess.DEVNULL)  # its log: not a lesson
printed = []
try:
    reply = client.execute_interactive(code, timeout=120, output_hook=lambda m: printed.append(
        m["content"].get("text", "")) if m["msg_type"] == "stream" and m["content"]["name"] == "stdout" else None)
finally:
    client.stop_channels()
    manager.shutdown_kernel(now=True)
elsewhere = json.loads("".join(printed))
here = run.predict(test.x).argmax(1).tolist()
print(f"fresh kernel: {reply['content']['status']}; its {len(elsewhere)} predictions equal this kernel's: {elsewhere == here}")

# %% [markdown]
# ## Checks

# %%
assert len(half.history) == epochs // 2 and len(run.history) == epochs
assert [row["epoch"] for row in run.history] == list(range(1, epochs + 1))
assert scores["accuracy"] > quick(0.85, 0.97), scores
assert 1e-5 < found["suggested_lr"] < 1
assert elsewhere == here
