"""Load test of ``nnlab serve`` on loopback: N requests from C concurrent clients, with and without micro-batching.

Each configuration starts a fresh ``nnlab serve RUN --port 0`` process (a free 127.0.0.1 port) and
sends real Fashion-MNIST test images (PNG) to ``POST /predict/{model}`` from ``--clients``
concurrent keep-alive connections until ``--requests`` have completed. It reports errors (any non-200),
p50/p99 latency, throughput, the mean batch size the server formed and the accuracy of the
served answers; the baseline is the same server with ``--max-batch 1`` (no batching).

    python benchmarks/serve_load.py --run runs/f1          # or no --run: trains fashion-cnn for 1 epoch first
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from nnlab.data.vision import load_image_dataset


def payloads(n: int) -> list[tuple[bytes, str]]:
    """(PNG bytes, true class) of the first ``n`` Fashion-MNIST test images."""
    data = load_image_dataset("fashion-mnist")
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(data.test_images[i, 0].numpy()).save(buffer, format="PNG")
        out.append((buffer.getvalue(), data.classes[int(data.test_labels[i])]))
    return out


def multipart(data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with ``data`` as field ``file``, and its content type."""
    boundary = "nnlab-load-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load(port: int, model: str, items: list[tuple[bytes, str]], requests: int, clients: int) -> dict:
    """Send ``requests`` predictions from ``clients`` threads, one keep-alive connection each.

    The client is plain ``http.client`` with the multipart bodies built beforehand, so that on a
    small machine the load generator takes as little CPU as it can from the server it measures.
    """
    bodies = [(*multipart(data), label) for data, label in items]
    counter = itertools.count()
    lock = threading.Lock()
    latencies, errors, correct, batches = [], [], [0], []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while (i := next(counter)) < requests:
            body, content_type, label = bodies[i % len(bodies)]
            start = time.perf_counter()
            connection.request("POST", f"/predict/{model}", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    errors.append(f"{response.status} {payload[:200]!r}")
                    continue
                answer = json.loads(payload)
                correct[0] += answer["top"][0]["class"] == label
                batches.append(answer["batch_size"])
        connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
            "throughput_rps": round(len(latencies) / elapsed, 1), "seconds": round(elapsed, 2),
            "mean_batch": round(statistics.fmean(batches), 2) if batches else None,
            "served_accuracy": round(correct[0] / max(1, len(batches)), 4)}


def run_config(run: Path, extra: list[str], items: list, requests: int, clients: int) -> dict:
    """Start ``nnlab serve RUN`` with ``extra`` flags, load it, stop it."""
    exe = Path(sys.executable).with_name("nnlab")
    proc = subprocess.Popen([str(exe), "serve", str(run), "--port", "0", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())  # port 0: the server picked a free port and says which
        base = ready["url"].rstrip("/")
        port = int(base.rsplit(":", 1)[1])
        for _ in range(600):
            try:
                httpx.get(f"{base}/health").raise_for_status()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        load(port, ready["models"][0], items, 50, clients)  # warm-up, not counted
        return load(port, ready["models"][0], items, requests, clients)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def train_default(out: Path) -> Path:
    from nnlab.recipes import train
    train("fashion-cnn", out=out, overrides={"epochs": 1}, stream=io.StringIO())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="image run to serve (default: train fashion-cnn for 1 epoch)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or train_default(Path(scratch) / "fashion-cnn")
        items = payloads(min(args.requests, 10_000))
        batched = run_config(run, [], items, args.requests, args.clients)
        unbatched = run_config(run, ["--max-batch", "1", "--batch-wait-ms", "0"], items, args.requests, args.clients)
    print(json.dumps({
        "benchmark": "serve_load", "run": str(args.run or "fashion-cnn, 1 epoch"), "requests": args.requests,
        "clients": args.clients, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "micro_batched": batched, "baseline_max_batch_1": unbatched,
        "throughput_ratio": round(batched["throughput_rps"] / unbatched["throughput_rps"], 2),
        "p99_ratio": round(batched["p99_ms"] / unbatched["p99_ms"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
