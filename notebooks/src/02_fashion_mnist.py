# %% [markdown]
# # 2. Fashion-MNIST: the MLP, then the CNN
#
# 70,000 grey 28x28 pictures of ten kinds of clothing. A multilayer perceptron sees each picture as
# 784 unrelated numbers; a convolutional net knows that neighbouring pixels belong together, and
# wins by several points. Both runs hold out a validation split (it picks the best epoch and can stop
# training early), keep their best weights in `best.pt`, and report on the 10,000 test images they
# never saw.

# %%
import nnlab
from lesson import QUICK, RUNS, dataset, header, quick, show

header("Lesson 2: Fashion-MNIST, MLP then CNN")
dataset("fashion-mnist")  # Debian's dataset-fashion-mnist, or the cache; else the first run downloads it
nnlab.show_batch("fashion-mlp", 16)

# %% [markdown]
# ## The MLP
# 784-256-128-64-10 with ReLU and dropout 0.2 (each training step silences a fifth of the hidden
# units at random, so that no unit can rely on another). `patience=2` stops the run when the
# validation loss has not improved for two epochs, and the best epoch's weights are kept.
# Quick mode trains a quarter of one epoch's batches.

# %%
mlp = nnlab.train("fashion-mlp", out=RUNS / "fashion-mlp", force=True, patience=2,
                  **quick({"epochs": 2, "limit_train_batches": 0.125}, {}))
print(mlp.headline())
mlp.plot_curves()

# %% [markdown]
# ## The CNN
# Three blocks of convolution, batch norm, ReLU and max-pooling, then a small head; mirrored
# pictures as augmentation, label smoothing, a one-cycle schedule. The recipe trains for 115 s;
# quick mode trains a narrower net (16-32-64 channels) on a quarter of an epoch.

# %%
cnn = nnlab.train("fashion-cnn", out=RUNS / "fashion-cnn", force=True,
                  **quick({"epochs": 2, "limit_train_batches": 0.125,
                           "model_args": {"widths": (16, 32, 64), "head_hidden": 128}}, {}))
print(cnn.headline())
cnn.plot_curves()

# %% [markdown]
# ## Saving and loading
# A run is a directory. `nnlab.load` rebuilds the model from `config.json` and the weights of
# `best.pt` (weights only: no pickled code) and scores the test split again: the same number.

# %%
loaded = nnlab.load(cnn.run_dir)
again = loaded.evaluate()
print(f"trained: {cnn.summary['test_accuracy']:.4f}   loaded and evaluated again: {again['test_accuracy']:.4f}")

# %% [markdown]
# ## Where it goes wrong
# The confusion matrix (rows: the true class; each row sums to 1) and the first test pictures with
# the true and predicted classes. Shirts, T-shirts, pullovers and coats are the hard ones.

# %%
show(loaded.plot_confusion(), loaded.show_results(16))
print("most confused:", cnn.summary["most_confused"][:3])

# %% [markdown]
# ## Checks

# %%
assert mlp.summary["test_accuracy"] > quick(0.75, 0.87), mlp.summary["test_accuracy"]
assert cnn.summary["test_accuracy"] > quick(0.85, 0.93), cnn.summary["test_accuracy"]
assert cnn.summary["test_accuracy"] > mlp.summary["test_accuracy"]
assert again["test_accuracy"] == cnn.summary["test_accuracy"]
