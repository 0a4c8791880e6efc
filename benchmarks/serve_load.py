"""Load test of ``nnlab serve`` on loopback: N requests from C concurrent clients, with and without micro-batching.

Each configuration starts a fresh ``nnlab serve RUN --port 0`` process (a free 127.0.0.1 port) and
sends real Fashion-MNIST test images (PNG) to ``POST /predict/{model}`` from ``--clients``
concurrent keep-alive connections until ``--requests`` have completed. It reports errors (any non-200),
p50/p99 latency, throughput, the mean batch size the server formed and the accuracy of the
served answers; the baseline is the same server with ``--max-batch 1`` (no batching). A third,
mixed load (issue 19) makes every ``--bad-every``-th request a bad one (bytes that are no image, a
truncated PNG, a JSON body, an unknown model, in turn): the good ones must all get 200, the bad
ones a 4xx, never a 5xx. Each configuration reports the server's resident memory (VmRSS) after the
warm-up and after the load. ``--backends torch,onnx`` (issue 18) adds, for each further backend,
the micro-batched load again with ``nnlab serve --backend B`` (onnxruntime running the run's ONNX
graph), and the throughput and p99 ratios to the first backend.

    python benchmarks/serve_load.py --run runs/f1          # or no --run: trains fashion-cnn for 1 epoch first
    python benchmarks/serve_load.py --backends torch,onnx
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


def bad_requests(items: list[tuple[bytes, str]], model: str) -> list[tuple[str, bytes, str]]:
    """(path, body, content type) of requests the server must refuse with a 4xx."""
    png = items[0][0]
    return [(f"/predict/{model}", *multipart(b"these bytes are no image" * 8)),
            (f"/predict/{model}", *multipart(png[: len(png) // 2])),
            (f"/predict/{model}", b'{"inputs": ["a name"]}', "application/json"),
            ("/predict/no-such-model", *multipart(png))]


def rss_mib(pid: int) -> float:
    """The resident memory of process ``pid`` in MiB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return round(kib / 1024, 1)


def load(port: int, model: str, items: list[tuple[bytes, str]], requests: int, clients: int,
         bad_every: int = 0) -> dict:
    """Send ``requests`` predictions from ``clients`` threads, one keep-alive connection each; with
    ``bad_every`` N, every N-th request is one of ``bad_requests`` instead.

    The client is plain ``http.client`` with the multipart bodies built beforehand, so that on a
    small machine the load generator takes as little CPU as it can from the server it measures.
    """
    bodies = [(*multipart(data), label) for data, label in items]
    bad = bad_requests(items, model)
    counter = itertools.count()
    lock = threading.Lock()
    latencies, errors, correct, batches = [], [], [0], []
    refused: dict[int, int] = {}

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while (i := next(counter)) < requests:
            if bad_every and i % bad_every == bad_every - 1:
                path, body, content_type = bad[(i // bad_every) % len(bad)]
                connection.request("POST", path, body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                with lock:
                    refused[response.status] = refused.get(response.status, 0) + 1
                if response.getheader("connection", "").lower() == "close":
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
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
            "served_accuracy": round(correct[0] / max(1, len(batches)), 4),
            **({"bad_requests": sum(refused.values()), "bad_statuses": dict(sorted(refused.items())),
                "all_requests_rps": round((len(latencies) + sum(refused.values())) / elapsed, 1),
                "bad_5xx": sum(n for status, n in refused.items() if status >= 500)} if bad_every else {})}


def run_config(run: Path, extra: list[str], items: list, requests: int, clients: int, bad_every: int = 0) -> dict:
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
        before = rss_mib(proc.pid)
        result = load(port, ready["models"][0], items, requests, clients, bad_every)
        return {**result, "rss_mib_before": before, "rss_mib_after": rss_mib(proc.pid)}
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
    parser.add_argument("--bad-every", type=int, default=4, help="mixed load: every N-th request is a bad one")
    parser.add_argument("--backends", default="auto", help="comma-separated `nnlab serve --backend` values; "
                        "the first runs every configuration, each further one the micro-batched load")
    args = parser.parse_args()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or train_default(Path(scratch) / "fashion-cnn")
        items = payloads(min(args.requests, 10_000))
        first = ["--backend", backends[0]]
        batched = run_config(run, first, items, args.requests, args.clients)
        unbatched = run_config(run, [*first, "--max-batch", "1", "--batch-wait-ms", "0"], items, args.requests,
                               args.clients)
        mixed = run_config(run, first, items, args.requests, args.clients, args.bad_every)
        others = {backend: run_config(run, ["--backend", backend], items, args.requests, args.clients)
                  for backend in backends[1:]}
    for backend, result in others.items():
        result["throughput_ratio_to_" + backends[0]] = round(result["throughput_rps"] / batched["throughput_rps"], 2)
        result["p99_ratio_to_" + backends[0]] = round(result["p99_ms"] / batched["p99_ms"], 2)
    print(json.dumps({
        "benchmark": "serve_load", "run": str(args.run or "fashion-cnn, 1 epoch"), "requests": args.requests,
        "clients": args.clients, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "backend": backends[0], "micro_batched": batched, "baseline_max_batch_1": unbatched,
        f"mixed_1_in_{args.bad_every}_bad": mixed, **{f"micro_batched_{b}": r for b, r in others.items()},
        "throughput_ratio": round(batched["throughput_rps"] / unbatched["throughput_rps"], 2),
        "p99_ratio": round(batched["p99_ms"] / unbatched["p99_ms"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
