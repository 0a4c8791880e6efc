# %% [markdown]
# # 1. Basics: tensors, autograd, gradient descent, the perceptron, softmax
#
# A tensor is an n-dimensional array that can remember how it was computed; `backward()` walks that
# record back and fills in every gradient. Gradient descent is then three lines, and `torch.optim`
# writes them for us. We check that the three ways agree, train a perceptron and a logistic
# regression on a CSV of points through `nnlab.train`, and end with softmax and cross-entropy.

# %%
import numpy as np
import torch
import matplotlib.pyplot as plt

import nnlab
from nnlab.lessons import gradient_descent as gd
from lesson import QUICK, RUNS, header, quick

header("Lesson 1: basics")

# %% [markdown]
# ## Autograd
# For $f(x) = \sum x^3$ the gradient is $3x^2$: autograd gets it without being told.

# %%
x = torch.tensor([1.0, 2.0, -3.0], requires_grad=True)
f = (x ** 3).sum()
f.backward()
print("autograd:", x.grad.tolist(), " by hand 3x^2:", (3 * x.detach() ** 2).tolist())

# %% [markdown]
# ## Gradient descent three ways
# Logistic regression on two overlapping clouds: (1) NumPy with the gradient derived by hand,
# $X^T(p - y)/n$; (2) autograd with the update written out (and `.grad` zeroed: `backward` *adds*);
# (3) `torch.optim.SGD`. Without momentum all three take the same steps to the same weights.

# %%
points, labels = gd.make_data(200, seed=0)
steps = quick(200, 500)
ways = {"numpy, by hand": gd.gd_numpy(points, labels, steps=steps),
        "autograd": gd.gd_autograd(points, labels, steps=steps),
        "torch.optim.SGD": gd.gd_sgd(points, labels, steps=steps, momentum=0.0)}
for name, w in ways.items():
    print(f"{name:16s} w = {np.round(w, 6)}  log-loss {gd.log_loss(w, points, labels):.5f}")
spread = max(np.abs(w - ways["numpy, by hand"]).max() for w in ways.values())
print(f"largest difference between the ways: {spread:.2e}")
print("forgetting zero_grad: 3 backward calls hold", np.round(gd.accumulated_gradient(points, labels, 3), 4),
      "= 3 x", np.round(gd.accumulated_gradient(points, labels, 1), 4))

# %% [markdown]
# ## The perceptron and logistic regression on a CSV
# Two classes of 2-D points in a CSV file. The perceptron (Rosenblatt's rule: move the line
# towards each point it gets wrong) stops once no point is wrong; logistic regression (the
# `tabular` recipe with `model="logistic"`) fits probabilities by gradient descent.

# %%
rng = np.random.default_rng(0)
n = 200
label = np.arange(n) % 2
xy = rng.normal(size=(n, 2)) * 0.5 + np.where(label[:, None] == 1, 1.2, -1.2)
csv = RUNS / "points.csv"
RUNS.mkdir(parents=True, exist_ok=True)
np.savetxt(csv, np.column_stack([xy, label]), delimiter=",", header="x1,x2,label", comments="", fmt=["%.4f", "%.4f", "%d"])

perceptron = nnlab.train("perceptron", out=RUNS / "perceptron", force=True, csv=str(csv), target="label",
                         epochs=quick(20, 50))
logistic = nnlab.train("tabular", out=RUNS / "logistic", force=True, csv=str(csv), target="label",
                       model="logistic", epochs=quick(20, 60))
print(perceptron.headline(), "| converged:", perceptron.summary["converged"])
print(logistic.headline())

# %% [markdown]
# The decision boundaries: the perceptron's line $w \cdot x + b = 0$ from its weights, and where the
# logistic regression's probability crosses 0.5, from `run.predict` over a grid of points.

# %%
grid_x, grid_y = np.meshgrid(np.linspace(-4, 4, 80), np.linspace(-4, 4, 80))
grid_csv = RUNS / "grid.csv"
np.savetxt(grid_csv, np.column_stack([grid_x.ravel(), grid_y.ravel()]), delimiter=",", header="x1,x2", comments="")
logistic.predict(str(grid_csv), output=str(RUNS / "grid.predictions.csv"))
p1 = np.genfromtxt(RUNS / "grid.predictions.csv", delimiter=",", names=True)["probability_1"].reshape(grid_x.shape)

fig, ax = plt.subplots(figsize=(5, 5))
ax.scatter(xy[:, 0], xy[:, 1], c=np.where(label == 1, "tab:blue", "tab:red"), s=10)
w, b = perceptron.summary["weights"], perceptron.summary["bias"]
ax.plot(grid_x[0], -(w[0] * grid_x[0] + b) / w[1], "k-", label="perceptron")
ax.contour(grid_x, grid_y, p1, levels=[0.5], colors="green", linestyles="--")
ax.plot([], [], "g--", label="logistic regression, p = 0.5")
ax.set(xlim=(-4, 4), ylim=(-4, 4), xlabel="x1", ylabel="x2")
ax.legend(loc="upper left");

# %% [markdown]
# ## Softmax and cross-entropy
# Softmax turns scores (logits) into probabilities; cross-entropy is minus the log of the
# probability given to the true class. `F.cross_entropy` takes the logits and does both at once,
# in a numerically safe way.

# %%
logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
target = torch.tensor([0, 2])
probs = logits.exp() / logits.exp().sum(1, keepdim=True)
by_hand = -probs[torch.arange(2), target].log().mean()
print("softmax by hand:", probs.numpy().round(4))
print(f"cross-entropy by hand {by_hand:.5f}, torch {torch.nn.functional.cross_entropy(logits, target):.5f}")

# %% [markdown]
# ## Checks
# What this lesson showed, as asserts (they hold in quick mode as in full mode).

# %%
assert torch.allclose(x.grad, 3 * x.detach() ** 2)
assert spread < 1e-9, spread
assert perceptron.summary["converged"] and perceptron.summary["test_accuracy"] == 1.0
assert logistic.summary["test_accuracy"] >= 0.95, logistic.summary["test_accuracy"]
assert torch.allclose(by_hand, torch.nn.functional.cross_entropy(logits, target))
