# %% [markdown]
# # 11. Experiments: sweeps, seeds, ablations, comparisons, TensorBoard
#
# One run is one draw: another seed moves Fashion-MNIST accuracy by a few tenths of a point. So a
# setting is judged over seeds, on the validation split (the test split is looked at once, for
# the setting chosen), and a trick earns its place by an ablation: train without it and measure
# what is lost. Every trial is an ordinary run directory, so `compare` and TensorBoard read them all.

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from nnlab.commands.ablate import ablate, ablation_figure, format_ablation
from nnlab.commands.runs import compare, compare_figure, read_metrics
from nnlab.commands.sweep import format_report, sweep
from lesson import RUNS, dataset, header, quick

header("Lesson 11: experiments")
_ = dataset("fashion-mnist")
short = quick({"epochs": 1, "limit_train_batches": 0.125}, {})

# %% [markdown]
# ## A sweep over learning rates, two seeds each
# The grid is two learning rates of `fashion-mlp`, each trained with seeds 0 and 1 (an Optuna
# study in `sweep.db`: run the same call again and it continues; a trial is never run twice).
# Quick mode trains each for an eighth of an epoch.

# %%
report = sweep("fashion-mlp", ["lr=1e-3,3e-3"], seeds=2, out=RUNS / "sweep", overrides=short)
print(format_report(report))
fig, ax = plt.subplots(figsize=(5, 3))
settings = report["settings"]
ax.bar([s["setting"] for s in settings], [s["mean"] for s in settings], yerr=[s["std"] for s in settings], capsize=4)
ax.set(ylabel=f"{report['metric']} (mean ± std over seeds)", ylim=(min(s["mean"] for s in settings) - 0.05, None));

# %% [markdown]
# ## An ablation
# `fashion-mlp` declares three tricks (dropout, weight decay, the one-cycle schedule); `ablate`
# trains the full recipe and the recipe without each, with the same seeds, and reports the gain of
# each trick paired by seed.

# %%
ablation = ablate("fashion-mlp", seeds=quick(1, 3), out=RUNS / "ablate", overrides=short)
print(format_ablation(ablation))
ablation_figure("fashion-mlp", ablation["ablation"])

# %% [markdown]
# ## Comparing two runs
# What differs between two trials of the sweep (a learning rate and a seed), and their curves overlaid.

# %%
trials = sorted(p for p in (RUNS / "sweep").iterdir() if (p / "config.json").is_file())
pair = [trials[0], trials[-1]]
compared = compare(pair, out=RUNS / "compare.png")
for key, values in compared["differences"].items():
    print(f"{key:20s}", "  ".join(f"{Path(run).name}={value}" for run, value in zip(compared["runs"], values)))
compare_figure({Path(run).name: read_metrics(Path(run) / "metrics.jsonl")[0] for run in pair})

# %% [markdown]
# ## TensorBoard
# Every run writes TensorBoard event files beside its metrics. To see all of them side by side:
# `tensorboard --logdir notebooks/runs` in a terminal (then http://localhost:6006), or in a
# notebook `%load_ext tensorboard` and `%tensorboard --logdir runs`.

# %%
events = sorted(RUNS.rglob("events.out.tfevents.*"))
print(f"{len(events)} event files, e.g. {events[0].relative_to(RUNS) if events else None}")

# %% [markdown]
# ## Checks

# %%
assert report["complete"] and report["trials_done"] == 4
assert report["best"]["setting"] == settings[0]["setting"] and settings[0]["mean"] >= settings[-1]["mean"]
assert {row["trick"] for row in ablation["ablation"]["tricks"]} == {"dropout", "weight_decay", "one_cycle"}
assert "lr" in compared["differences"] or "seed" in compared["differences"]
assert len(events) >= 4
