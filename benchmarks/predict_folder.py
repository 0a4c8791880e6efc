"""Images/s of `nnlab predict RUN DIR/ --csv OUT.csv` over the 10,000 Fashion-MNIST test images as PNGs.

Writes the test split as PNG files (``NNNNN_LABEL.png``, not timed), then times the prediction
two ways (and decoding alone, for its share): in this process (``nnlab.kinds.image.predict``: decoding + model, the figure a
server or a notebook sees) and as the command a user types (a fresh ``nnlab`` process, its
start-up included). The CSV's accuracy against the labels is set beside ``nnlab eval RUN``'s
on the same images (bf16 autocast where the run used it; predict computes in fp32), so the
rows are known to belong to their files. The last stdout line is JSON.

    .venv/bin/python benchmarks/predict_folder.py RUN [--images DIR] [--limit N]
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from nnlab.data.images import load_image, save_image
from nnlab.data.vision import load_image_dataset
from nnlab.kinds.image import evaluate, load_run, predict


def write_pngs(folder: Path, images: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """The images as ``folder/NNNNN_LABEL.png`` (kept if already there); their labels in file order."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        path = folder / f"{i:05d}_{label}.png"
        if not path.exists():
            save_image(image, path)
    return labels.tolist()


def csv_accuracy(path: Path, classes: list[str]) -> tuple[int, float]:
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    right = sum(classes[int(Path(r["file"]).stem.split("_")[1])] == r["predicted"] for r in rows)
    return len(rows), right / len(rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a trained image run on Fashion-MNIST")
    parser.add_argument("--images", type=Path, help="folder for the PNGs (default: a temp folder)")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    args = parser.parse_args(argv)
    config, _, state = load_run(args.run_dir)
    data = load_image_dataset(config.dataset, config.data)
    n = min(args.limit or len(data.test_labels), len(data.test_labels))
    folder = args.images or Path(tempfile.mkdtemp(prefix="predict-pngs-"))
    start = time.perf_counter()
    write_pngs(folder, data.test_images[:n], data.test_labels[:n])
    written_s = time.perf_counter() - start
    out = folder.parent / f"{folder.name}.predictions.csv"

    start = time.perf_counter()
    result = predict(args.run_dir, [folder], csv=out)
    in_process_s = time.perf_counter() - start
    rows, accuracy = csv_accuracy(out, state["classes"])
    start = time.perf_counter()
    channels, height, width = state["input_shape"]
    for path in sorted(folder.glob("*.png"))[:n]:  # decoding alone: its share of the in-process time
        load_image(path, (height, width), channels)
    decode_s = time.perf_counter() - start

    command = [str(Path(sys.executable).with_name("nnlab")), "predict", str(args.run_dir), str(folder), "--csv", str(out)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    cli_s = time.perf_counter() - start
    cli_rows, cli_accuracy = csv_accuracy(out, state["classes"])

    eval_accuracy = evaluate(args.run_dir)["test_accuracy"] if n == len(data.test_labels) else None
    report = {"command": "benchmarks/predict_folder.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "images": n, "rows": result["rows"], "pngs_written_s": round(written_s, 2),
              "in_process_s": round(in_process_s, 2), "in_process_images_per_s": round(n / in_process_s, 1),
              "decode_only_s": round(decode_s, 2),
              "cli_s": round(cli_s, 2), "cli_images_per_s": round(n / cli_s, 1), "csv_accuracy": accuracy,
              "cli_csv_accuracy": cli_accuracy, "cli_rows": cli_rows, "eval_accuracy": eval_accuracy,
              "tta": config.tta, "threads": torch.get_num_threads(), "cli": " ".join(command)}
    assert rows == cli_rows == n
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
