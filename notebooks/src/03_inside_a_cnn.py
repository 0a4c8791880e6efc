# %% [markdown]
# # 3. Inside a CNN
#
# A convolution slides a small grid of weights (a kernel) over the image and writes, at every
# place, the weighted sum of the pixels under it. Hand-written kernels find edges; a trained
# net learns its own. We look at both, work out the size of every layer's output, pool, and ask
# Grad-CAM which pixels a prediction rested on.

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_image

import nnlab
from nnlab.data.vision import load_image_dataset
from nnlab.inspection.filters import KERNELS, apply_kernel, read_kernel
from lesson import RUNS, dataset, header, quick, show

header("Lesson 3: inside a CNN")
_ = dataset("fashion-mnist")

# %% [markdown]
# ## Hand-written kernels on a real photograph
# scikit-learn ships two photographs; here its `china.jpg` (a temple), in grey. Sobel-x answers to
# vertical edges, Sobel-y to horizontal ones, the Laplacian to edges in any direction.

# %%
photo = torch.tensor(load_sample_image("china.jpg")).float().mean(2) / 255  # [H, W] grey, 0..1
names = ["sobel-x", "sobel-y", "laplacian", "blur"]
fig, axes = plt.subplots(1, 5, figsize=(16, 3))
axes[0].imshow(photo, cmap="gray"); axes[0].set_title(f"china.jpg {tuple(photo.shape)}")
for ax, name in zip(axes[1:], names):
    out = apply_kernel(photo, read_kernel(name))
    ax.imshow(out.abs() if name != "blur" else out, cmap="gray"); ax.set_title(f"{name} {KERNELS[name][0]}...")
for ax in axes:
    ax.set_axis_off()

# %% [markdown]
# ## Pooling
# Max-pooling keeps the largest value of each 2x2 block: half the height and width, and the edges survive.

# %%
edges = apply_kernel(photo, read_kernel("laplacian")).abs()
pooled = F.max_pool2d(edges[None, None], 2)[0, 0]
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for ax, img, title in zip(axes, [edges, pooled], [f"edges {tuple(edges.shape)}", f"max-pooled 2x2 {tuple(pooled.shape)}"]):
    ax.imshow(img, cmap="gray"); ax.set_title(title); ax.set_axis_off()

# %% [markdown]
# ## A trained net, layer by layer
# We train fashion-cnn (quick mode: a narrower net on a quarter of an epoch) and read its summary
# table. A convolution or pooling of kernel $K$, stride $S$ and padding $P$ turns a side of $W$ pixels
# into $\lfloor (W + 2P - K)/S \rfloor + 1$; we check every row of the table against that formula.

# %%
run = nnlab.train("fashion-cnn", out=RUNS / "cnn", force=True,
                  **quick({"epochs": 1, "limit_train_batches": 0.25,
                           "model_args": {"widths": (16, 32, 64), "head_hidden": 128}}, {}))
print(run.headline())
table = run.summary_table()
modules = dict(run.model.named_modules())
side, checked = table["input_shape"][-1], 0
for row in table["layers"]:
    layer = modules[row["name"]]
    if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
        k, s, p = (getattr(layer, a) for a in ("kernel_size", "stride", "padding"))
        k, s, p = (v[0] if isinstance(v, tuple) else v for v in (k, s, p))
        side = math.floor((side + 2 * p - k) / s) + 1
        assert row["output_shape"][-1] == side, (row, side)
        checked += 1
    print(f"{row['name']:10s} {row['type']:18s} {str(row['output_shape']):16s} {row['params']:>8,} params")
print(f"{checked} conv and pooling layers agree with the formula; {table['total_params']:,} parameters")

# %% [markdown]
# ## Filters and feature maps
# The first layer's 3x3 filters, and what each makes of one test picture (a feature map per filter).

# %%
data = load_image_dataset("fashion-mnist")
image = data.test_images[0]  # uint8 [1, 28, 28], an ankle boot
maps = run.filters(image=image)
show(maps)

# %% [markdown]
# ## Grad-CAM
# Which part of the picture made the net say what it said: the gradient of the class score
# weighs the last convolutional feature maps, and their weighted sum is the heat map.

# %%
cams = [run.cam(data.test_images[i]) for i in range(4)]
for i, cam in enumerate(cams):
    print(f"predicted {cam['predicted']} (p={cam['probability']:.2f}); true {data.classes[int(data.test_labels[i])]}")
show(*cams)

# %% [markdown]
# ## Checks

# %%
assert torch.equal(apply_kernel(torch.ones(5, 5), read_kernel("sobel-x"))[1:-1, 1:-1], torch.zeros(3, 3))
assert tuple(pooled.shape) == (edges.shape[0] // 2, edges.shape[1] // 2)
assert checked >= 4
assert run.summary["test_accuracy"] > quick(0.84, 0.93)
assert maps["featuremap_shape"][0] == maps["filters"]
assert sum(c["predicted"] == data.classes[int(data.test_labels[i])] for i, c in enumerate(cams)) >= 3
