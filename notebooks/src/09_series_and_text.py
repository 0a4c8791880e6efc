# %% [markdown]
# # 9. Time series and text classification
#
# Two more uses of a recurrent net. Forecasting: read a window of past values, predict the next;
# a forecast is only worth something if it beats the naive one (tomorrow = today). Text
# classification: read the words of a text, pool the LSTM's states into one vector, classify; with
# attention pooling the model also says which words it weighed.

# %%
import csv

import matplotlib.pyplot as plt

import nnlab
from nnlab.kinds.series import forecast, load_series, split_windows
from nnlab.kinds.textcls import word_weights_figure
from lesson import QUICK, RUNS, dataset, header, quick

header("Lesson 9: time series and text classification")

# %% [markdown]
# ## Forecasting noisy sine waves
# `sine-rnn` generates 3,000 values of two summed sines (periods 50 and 13) plus noise of standard
# deviation 0.1; an LSTM reads 32 values and predicts the next. The last 20% is the validation tail.
# *Skill* is 1 - MSE / MSE of the naive forecast: 0 is no better than repeating the last value.

# %%
series_run = nnlab.train("sine-rnn", out=RUNS / "sine", force=True, tensorboard=False, **quick({"epochs": 4}, {}))
s = series_run.summary
print(f"{series_run.headline()}\nvalid MSE {s['valid_mse']:.4f} against the naive forecast's {s['naive_mse']:.4f}: "
      f"skill {s['skill']:.2f} (the noise alone costs 0.01)")
values, _ = load_series(series_run.config)
vx, vy = split_windows(values, series_run.config)["valid"]
predicted = forecast(series_run.model, vx, series_run.state["mean"], series_run.state["std"])
fig, ax = plt.subplots(figsize=(10, 3))
shown = slice(0, 150)
ax.plot(vy[shown, 0], label="true", lw=1); ax.plot(predicted[shown, 0], label="LSTM", lw=1)
ax.plot(vx[shown, -1], label="naive (last value)", lw=1, ls=":"); ax.set_xlabel("validation step"); ax.legend();

# %% [markdown]
# ## Text classification on a CSV
# `text-classify` takes any CSV with a text column and a label column (IMDB or Yelp reviews
# exported to CSV: `nnlab.train("text-classify", csv="reviews.csv", text_column="review",
# label_column="sentiment")`). No review data set is on this machine, so the stand-in is real
# text of another task: the 5,000 Tatoeba pairs of `eng-fra-5k`, each side a row labelled with its
# language. It is an easy task; the point is the pipeline and the word weights.

# %%
pairs = dataset("eng-fra-5k")
assert pairs, "eng-fra-5k is absent: set NNLAB_DATA to the folder holding translation/eng-fra-5k.txt"
path = pairs.split("(")[-1].rstrip(")")  # "$NNLAB_DATA/translation (PATH)"
rows_csv = RUNS / "sentences.csv"
with open(path, encoding="utf-8") as source, open(rows_csv, "w", newline="", encoding="utf-8") as out:
    writer = csv.writer(out)
    writer.writerow(["text", "language"])
    for line in source:
        english, french = line.rstrip("\n").split("\t")[:2]
        writer.writerows([[english, "English"], [french, "French"]])
text_run = nnlab.train("text-classify", out=RUNS / "text", force=True, tensorboard=False, csv=str(rows_csv),
                       text_column="text", label_column="language", pooling="attention",
                       **quick({"epochs": 2, "hidden_size": 32, "embed": 32}, {}))
print(text_run.headline())

# %% [markdown]
# Each word on a background as dark as its attention weight: what the model read to decide.

# %%
texts = ["I am very happy today.", "Je suis très content aujourd'hui.", "Tom est là ?", "Where is the station?"]
results = text_run.predict(texts, top_k=1, explain=True)
for text, r in zip(texts, results):
    print(f"{r['top'][0]['class']:8s} {r['top'][0]['probability']:.3f}  {text}")
word_weights_figure([[(w["word"], w["weight"]) for w in r["words"]] for r in results],
                    [r["top"][0]["class"] for r in results])

# %% [markdown]
# ## Checks

# %%
assert s["skill"] > quick(0.3, 0.7), s["skill"]
assert s["valid_mse"] < s["naive_mse"]
assert text_run.summary["test_accuracy"] > quick(0.85, 0.97), text_run.summary["test_accuracy"]
assert [r["top"][0]["class"] for r in results] == ["English", "French", "French", "English"]
