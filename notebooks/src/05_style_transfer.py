# %% [markdown]
# # 5. Style transfer (Gatys et al.)
#
# A trained image classifier's early layers respond to colours and strokes, its deep layers to
# objects and their arrangement. Gatys et al. start from a photograph and change its *pixels*
# (not any weights) so that VGG19's deep features still match the photograph's (the content)
# while the correlations between its feature maps, the Gram matrices, match a second picture's
# (the style). This is what `nnlab stylize` does; here the pieces are called one by one.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from nnlab.errors import CheckpointError
from nnlab.models.weights import checkpoints_dir
from nnlab.workflows.stylize import (CONTENT_LAYER, CONTENT_WEIGHT, STYLE_LAYERS, STYLE_WEIGHT, WEIGHTS_FILE,
                                     WEIGHTS_URL, StyleLoss, gram_matrix, optimize, parse_style_layers,
                                     vgg19_features)
from lesson import QUICK, header, quick

header("Lesson 5: style transfer")

# %% [markdown]
# ## The weights
# The real method needs VGG19's ImageNet weights (548 MB, torchvision's file, downloaded into
# `$TORCH_HOME/hub/checkpoints/` on first use and checked against its SHA-256). Where the file is
# missing and cannot be downloaded (offline, or quick mode, which never downloads), the lesson runs the
# same pipeline on a randomly initialised VGG19 and says so: random features still carry texture
# statistics, but the picture is not Gatys et al.'s result.

# %%
layers = parse_style_layers(STYLE_LAYERS)
deepest = "conv5_1"
cached = (checkpoints_dir() / WEIGHTS_FILE).is_file()
weights = None if cached or not QUICK else "random"
try:
    features = vgg19_features(deepest, weights)
except CheckpointError as error:  # offline, or the download failed
    print(f"cannot get the ImageNet weights: {error}")
    weights, features = "random", vgg19_features(deepest, "random")
used = "random (untrained VGG19: a stand-in, not the method's result)" if weights == "random" else \
    f"ImageNet ({checkpoints_dir() / WEIGHTS_FILE})"
print("VGG19 weights:", used)

# %% [markdown]
# ## Content and style
# No painting ships with the libraries here, so the style picture is scikit-learn's `flower.jpg`
# and the content its `china.jpg`. Any two images work (`nnlab stylize photo.jpg painting.jpg`).

# %%
size = quick(96, 256)


def as_tensor(name: str) -> torch.Tensor:
    """scikit-learn's sample image ``name`` as [1, 3, H, W] in [0, 1], its longer side ``size``."""
    picture = Image.fromarray(load_sample_image(name))
    scale = size / max(picture.size)
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255).permute(2, 0, 1)[None].contiguous()


content, style = as_tensor("china.jpg"), as_tensor("flower.jpg")
loss = StyleLoss(features, content, style, CONTENT_LAYER, layers, CONTENT_WEIGHT, STYLE_WEIGHT)
print({name: tuple(gram.shape) for name, gram in loss.style_targets.items()}, "(a Gram matrix per style layer: channels x channels)")

# %% [markdown]
# ## Optimising the pixels
# Starting from the photograph, each step evaluates the content loss (conv4_2) and the style loss
# (Gram matrices of conv1_1 to conv5_1) and moves the pixels. Gatys et al. use LBFGS, as
# `nnlab stylize` does by default; on an untrained VGG19 LBFGS's steps oscillate (its loss rose
# over 150 steps at 256 px here), so the stand-in takes Adam's (`--optimizer adam`).

# %%
steps = quick(8, 150)
optimizer = "adam" if weights == "random" else "lbfgs"
history = []
image = content.clone().requires_grad_(True)
result = optimize(image, loss, steps, optimizer,
                  on_step=lambda step, terms: history.append({k: float(v) for k, v in terms.items()}))

fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
for ax, picture, title in zip(axes, (content, style, result), ("content: china.jpg", "style: flower.jpg", f"after {steps} {optimizer} steps")):
    ax.imshow(picture[0].permute(1, 2, 0).detach().clamp(0, 1).numpy()); ax.set_title(title); ax.set_axis_off()
for term in ("content", "style", "total"):
    axes[3].semilogy([h[term] for h in history], label=term)
axes[3].set(xlabel="step", title=f"weighted losses ({'random' if weights == 'random' else 'ImageNet'} VGG19)"); axes[3].legend();

# %% [markdown]
# ## Checks

# %%
assert history[-1]["total"] < 0.9 * history[0]["total"], (history[0], history[-1])
assert result.min() >= 0 and result.max() <= 1 and result.shape == content.shape
g = gram_matrix(torch.ones(1, 2, 3, 3))  # G = F F^T / (C H W): every entry 9 / 18
assert torch.allclose(g, torch.full_like(g, 0.5)), g
