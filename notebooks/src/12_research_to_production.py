# %% [markdown]
# # 12. From research to production
#
# A trained model leaves the notebook as a file other programs can run: TorchScript (PyTorch
# without your Python code), ONNX (any runtime: onnxruntime, a browser, a phone) or safetensors
# (the weights alone, loaded without unpickling anything). Each export is checked against the
# PyTorch model on 64 real test images before it is written. Then the model is served over HTTP.

# %%
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

from PIL import Image

import nnlab
from nnlab.data.vision import load_image_dataset
from lesson import RUNS, dataset, header, quick

header("Lesson 12: from research to production")
_ = dataset("fashion-mnist")
run = nnlab.train("fashion-cnn", out=RUNS / "cnn", force=True, tensorboard=False,
                  **quick({"epochs": 1, "limit_train_batches": 0.25,
                           "model_args": {"widths": (16, 32, 64), "head_hidden": 128}}, {}))
print(run.headline())

# %% [markdown]
# ## Three formats, each checked

# %%
exports = {fmt: run.export(fmt, RUNS / f"model.{ext}") for fmt, ext in
           (("torchscript", "pt"), ("onnx", "onnx"), ("safetensors", "safetensors"))}
for fmt, meta in exports.items():
    check = meta["check"]
    print(f"{fmt:12s} {meta['bytes']:>9,} bytes  checked on {check['inputs']} test images: "
          f"passed={check['passed']}, largest logit difference {check.get('max_abs_diff', float('nan')):.2e}")
print("input:", exports["onnx"]["input"]["normalize"], exports["onnx"]["input"]["shape"])

# %% [markdown]
# ## The ONNX model without PyTorch
# The ONNX export writes `nnlab_client.py` beside the model: numpy, Pillow and onnxruntime only,
# with the same image preprocessing `nnlab predict` uses. We run it on a test picture saved as PNG,
# in another process, and compare with the run's own prediction.

# %%
data = load_image_dataset("fashion-mnist")
picture = RUNS / "boot.png"
Image.fromarray(data.test_images[0, 0].numpy()).save(picture)
client = subprocess.run([sys.executable, exports["onnx"]["client"]["file"], str(RUNS / "model.onnx"), str(picture),
                         "--top-k", "3"], capture_output=True, text=True, check=True)
from_client = json.loads(client.stdout)
from_run = run.predict([str(picture)], top_k=3)
print("client:", from_client[0]["top"])
print("run:   ", from_run[0]["top"])

# %% [markdown]
# ## Serving it
# `nnlab serve RUN` answers `POST /predict/{run}` with the top classes of an uploaded image
# (a page at `/` to drop or draw one, the OpenAPI schema at `/docs`). Started here as a process,
# asked once, stopped.

# %%
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "nnlab", "serve", str(run.run_dir), "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
base = f"http://127.0.0.1:{port}"
try:
    for _ in range(quick(120, 240)):  # half-seconds: the server imports torch and checks its ONNX graph
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                health = json.load(answer)
            break
        except OSError:
            assert server.poll() is None, server.stderr.read()
            time.sleep(0.5)
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"boot.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + picture.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{base}/predict/{run.run_dir.name}?top_k=3", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        served = json.load(answer)
finally:
    server.terminate()
    server.wait(timeout=30)
print("health:", health)
print("served:", json.dumps(served)[:300])
print("server stopped, exit code", server.returncode)

# %% [markdown]
# ## Checks

# %%
assert all(meta["check"]["passed"] for meta in exports.values())
assert [t["class"] for t in from_client[0]["top"]] == [t["class"] for t in from_run[0]["top"]]
assert abs(from_client[0]["top"][0]["probability"] - from_run[0]["top"][0]["probability"]) < 1e-3
assert served["top"] == from_run[0]["top"], served  # the same numbers, through onnxruntime on the server
assert run.summary["test_accuracy"] > quick(0.84, 0.93)
