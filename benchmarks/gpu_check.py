"""A prepared GPU check (issue 18, part 6): what nnlab does on one CUDA GPU, as JSON, in under 8 minutes.

Each step is timed and reported whether it worked or not; a failed step is a row with its
error, never the end of the check:

- ``environment``: torch, CUDA, cuDNN and NCCL versions, the GPU and its memory;
- ``fashion_cnn``: the fashion-cnn recipe for 3 epochs on the device (test accuracy, images/s),
  and ``fashion_cnn_cpu``: the same 3 epochs, same seed, on this machine's CPU, the figure the
  device's accuracy is set beside;
- ``fp32``, ``bf16``, ``fp16``: fashion-cnn for 2 epochs with the precision forced (autocast;
  fp16 with a gradient scaler); ``compile``: the same with ``torch.compile`` (the first epoch
  pays for compiling, the second is the steady rate);
- ``cifar10_resnet``: the cifar10-resnet recipe for 2 epochs on random images written in the
  upstream archive layout (50,000 + 10,000): images/s, and the projected time of one epoch and
  of the recipe's 24;
- ``ddp``: torchrun with one process: the process group (NCCL on CUDA, gloo on the CPU), an
  all_reduce, DistributedDataParallel training steps against the same steps without it, then
  ``nnlab train`` inside that torchrun;
- ``char_lstm``: the shakespeare-lstm recipe for one epoch (characters/s).

    benchmarks/gpu_check.sh                         # on a CUDA machine: the whole check
    benchmarks/gpu_check.sh --device cpu --smoke    # everything tiny, on the CPU, in seconds

Fashion-MNIST and Tiny Shakespeare are taken from ``--fashion`` / ``--text``, ``$NNLAB_DATA`` or
the system folders, never downloaded; where they are absent (a bare GPU machine) a step trains
on generated data of the same layout and size and says so: its speed is real, its accuracy
means nothing. The last stdout line is the JSON; ``OUT/gpu_check.json`` holds it too, rewritten
after every step, so a check killed midway still leaves the steps it finished. Exit code 0: every
step worked; 3: the check ran to its end with failed steps.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

CPU_ACCURACY_NOTE = "fashion_cnn_cpu: the same recipe, epochs and seed on this machine's CPU"
TIME_BUDGET_S = 450.0  # the check must end within 8 minutes; a step that would not fit is skipped


@dataclass
class Check:
    """What every step needs: where it runs, how big, where it writes, the data it found."""

    device: str
    smoke: bool
    out: Path                  # gpu_check.json and one log per step (comes back from a GPU machine)
    work: Path                 # run directories and generated data (deleted at the end)
    fashion: Path | None       # a real Fashion-MNIST folder, or None: generated data
    text: Path | None          # a real Tiny Shakespeare file, or None: generated text
    deadline: float            # time.perf_counter() by which the check must end

    def fashion_data(self) -> tuple[str, str]:
        """The Fashion-MNIST folder to train on and what it is (real, or generated in its layout)."""
        if self.fashion is not None and not self.smoke:
            return str(self.fashion), f"Fashion-MNIST at {self.fashion}"
        folder = self.work / "fashion-mnist"
        if not folder.is_dir():
            write_fashion_like(folder, 600 if self.smoke else 60000, 100 if self.smoke else 10000)
        what = "generated (smoke)" if self.smoke else "generated in the upstream layout: Fashion-MNIST not found"
        return str(folder), what


def write_fashion_like(folder: Path, n_train: int, n_test: int) -> Path:
    """Fashion-MNIST's four IDX files with learnable made-up images (class k: a bright square at spot k)."""
    from nnlab.data.idx import write_idx
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for k in range(10):
            r, c = divmod(k, 5)
            images[labels == k, 4 + 10 * r:12 + 10 * r, 1 + 5 * c:6 + 5 * c] = 200
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def write_cifar_like(path: Path, per_batch: int, n_test: int) -> Path:
    """A ``cifar-10-python.tar.gz`` of random images in upstream's layout: five pickled training
    batches of ``per_batch`` rows (1024 red, 1024 green, 1024 blue bytes each), a test batch, the meta."""
    import io
    import pickle
    import tarfile
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]

    def batch(n: int) -> bytes:
        return pickle.dumps({b"batch_label": b"random", b"labels": rng.integers(0, 10, n).tolist(),
                             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             b"filenames": [b"%d.png" % i for i in range(n)]}, protocol=2)
    members = {f"data_batch_{i}": batch(per_batch) for i in range(1, 6)}
    members["test_batch"] = batch(n_test)
    members["batches.meta"] = pickle.dumps({b"label_names": names, b"num_cases_per_batch": per_batch,
                                            b"num_vis": 3072}, protocol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:  # random bytes do not compress: be quick
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def tiny_cnn(check: Check) -> dict[str, Any]:
    """Overrides that make the fashion-cnn recipe a second-long run in smoke mode (none otherwise)."""
    if not check.smoke:
        return {}
    return {"batch_size": 50, "eval_batch_size": 100, "model_args.widths": (8, 16, 16),
            "model_args.head_hidden": 32, "valid_fraction": 0.2, "threads": 1}


def train_run(check: Check, name: str, recipe: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train ``recipe`` through nnlab (its log in OUT/NAME.log): the summary's figures and each epoch's speed."""
    from nnlab.recipes import train
    run_dir = check.work / "runs" / name
    with open(check.out / f"{name}.log", "w", encoding="utf-8") as log:
        summary = train(recipe, out=run_dir, overrides=overrides, stream=log, dry_run=check.smoke)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keep = ("test_accuracy", "valid_bpc", "chars_per_s", "images_per_s", "train_seconds", "epochs", "best_epoch",
            "device", "precision", "dataset_source")
    return {**{k: summary[k] for k in keep if k in summary},
            "epoch_seconds": [round(r["seconds"], 3) for r in rows],
            "epoch_train_per_s": [round(r["train_images_per_s"], 1) for r in rows],
            "steady_train_per_s": round(rows[-1]["train_images_per_s"], 1)}


def step_environment(check: Check) -> dict[str, Any]:
    from nnlab.kit.rundir import environment
    info: dict[str, Any] = {**environment(), "cuda_available": torch.cuda.is_available(),
                            "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported(),
                    nccl=str(torch.cuda.nccl.version()))  # a tuple (2, 27, 3), an int in old torch
    elif check.device == "cuda":
        raise RuntimeError("--device cuda: torch.cuda.is_available() is False on this machine")
    return info


def fashion_overrides(check: Check, device: str, epochs: int, **changes: Any) -> dict[str, Any]:
    data, _ = check.fashion_data()
    return {"data": data, "device": device, "epochs": 1 if check.smoke else epochs, **tiny_cnn(check), **changes}


def step_fashion_cnn(check: Check) -> dict[str, Any]:
    result = train_run(check, "fashion_cnn", "fashion-cnn", fashion_overrides(check, check.device, 3))
    return {**result, "data": check.fashion_data()[1]}


def step_fashion_cnn_cpu(check: Check) -> dict[str, Any]:
    if check.device == "cpu":
        return {"skipped": "the check runs on the CPU: fashion_cnn is the CPU figure"}
    return train_run(check, "fashion_cnn_cpu", "fashion-cnn", fashion_overrides(check, "cpu", 3))


def precision_step(precision: str) -> Callable[[Check], dict[str, Any]]:
    def step(check: Check) -> dict[str, Any]:
        return train_run(check, precision, "fashion-cnn", fashion_overrides(check, check.device, 2, precision=precision))
    step.__doc__ = f"fashion-cnn for 2 epochs in {precision}"
    return step


def step_compile(check: Check) -> dict[str, Any]:
    with traced_only(check.smoke):
        result = train_run(check, "compile", "fashion-cnn", fashion_overrides(check, check.device, 2, compile=True))
    return {**result, **({"backend": "aot_eager (smoke)"} if check.smoke else {})}


@contextlib.contextmanager
def traced_only(smoke: bool) -> Iterator[None]:
    """In smoke mode ``torch.compile`` still traces the model (dynamo and AOT autograd) but skips
    inductor's code generation, whose C++ compiles alone took 6 minutes on the 2-core CPU."""
    original = torch.compile
    if smoke:
        torch.compile = functools.partial(original, backend="aot_eager")
    try:
        yield
    finally:
        torch.compile = original


def step_cifar10_resnet(check: Check) -> dict[str, Any]:
    per_batch, n_test = (40, 40) if check.smoke else (10000, 10000)
    folder = check.work / "cifar10"
    start = time.perf_counter()
    write_cifar_like(folder / "cifar-10-python.tar.gz", per_batch, n_test)
    written_s = time.perf_counter() - start
    tiny = ({"batch_size": 50, "eval_batch_size": 100, "model_args.widths": (8, 16, 16, 16), "threads": 1}
            if check.smoke else {})
    overrides = {"data": str(folder), "device": check.device, "epochs": 1 if check.smoke else 2, **tiny}
    result = train_run(check, "cifar10_resnet", "cifar10-resnet", overrides)
    from nnlab.recipes import get_recipe
    recipe = get_recipe("cifar10-resnet").config
    train_images = round(5 * per_batch * (1 - recipe.valid_fraction))
    epoch_s = train_images / result["steady_train_per_s"]
    return {**result, "archive_written_s": round(written_s, 2), "train_images": train_images,
            "projected_epoch_s": round(epoch_s, 2), "projected_recipe_s": round(epoch_s * recipe.epochs, 1),
            "recipe_epochs": recipe.epochs, "note": "random images: speed only, the accuracy means nothing"}


def step_ddp(check: Check) -> dict[str, Any]:
    """torchrun --nproc_per_node 1 on this file's ``--ddp-worker`` (a fresh process, as users launch it)."""
    data, what = check.fashion_data()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               str(Path(__file__).resolve()), "--ddp-worker", "--device", check.device, "--out", str(check.out),
               "--work", str(check.work), "--fashion", data] + (["--smoke"] if check.smoke else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                       os.environ.get("PYTHONPATH")]))}
    timeout = max(10.0, min(180.0, check.deadline - time.perf_counter()))
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    (check.out / "ddp.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"torchrun exited {done.returncode}: {' | '.join(tail)}")
    return {**json.loads(lines[-1]), "data": what}


def ddp_worker(args: argparse.Namespace) -> None:
    """Inside torchrun: a process group, an all_reduce, DDP steps against plain ones, then nnlab train."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from nnlab.engine.optim import create_optimizer
    from nnlab.models import create_model
    from nnlab.recipes import get_recipe
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if args.smoke:
        torch.set_num_threads(1)  # tiny steps on a shared 2-core CPU: two threads ran them 20x slower
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ones = torch.ones(4, device=device)
    dist.all_reduce(ones)
    result: dict[str, Any] = {"backend": dist.get_backend(), "world_size": dist.get_world_size(),
                              "all_reduce_ok": bool((ones == dist.get_world_size()).all())}
    config = get_recipe("fashion-cnn").config
    batch, steps = (50, 10) if args.smoke else (config.batch_size, 200)
    widths = {"widths": (8, 16, 16), "head_hidden": 32} if args.smoke else {}
    for wrapped in (False, True):
        torch.manual_seed(0)
        model = create_model(config.model, n_classes=10, **{**config.model_args, **widths}).to(device)
        runner = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if wrapped else model
        optimizer = create_optimizer(config.optimizer, model, config.lr, config.weight_decay)
        x = torch.randn(batch, 1, 28, 28, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        for i in range(steps + 5):  # 5 warm-up steps
            if i == 5:
                synchronize(device)
                start = time.perf_counter()
            torch.nn.functional.cross_entropy(runner(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        result["ddp_images_per_s" if wrapped else "plain_images_per_s"] = round(steps * batch / (time.perf_counter() - start), 1)
    result["ddp_ratio"] = round(result["ddp_images_per_s"] / result["plain_images_per_s"], 3)
    check = Check(args.device, args.smoke, args.out, args.work, None, None, time.perf_counter() + 120)
    overrides = {"data": args.fashion, "device": args.device, "epochs": 1, **tiny_cnn(check)}
    result["nnlab_train"] = train_run(check, "ddp_nnlab_train", "fashion-cnn", overrides)  # shuts the group down
    print(json.dumps(result), flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # host-device sync: the timings need the GPU's work finished


def generated_text(path: Path, n_chars: int) -> Path:
    """Made-up text of Tiny Shakespeare's size and alphabet size (65 characters): speed only."""
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.;:!?'-&$3\n"))
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(alphabet[rng.integers(0, len(alphabet), n_chars)]), encoding="utf-8")
    return path


def step_char_lstm(check: Check) -> dict[str, Any]:
    if check.text is not None and not check.smoke:
        text, what = check.text, f"Tiny Shakespeare at {check.text}"
    else:
        text = generated_text(check.work / "text.txt", 20000 if check.smoke else 1_115_394)
        what = "generated (smoke)" if check.smoke else "generated text of Tiny Shakespeare's size: not found"
    tiny = ({"hidden_size": 32, "embed": 16, "layers": 1, "bptt": 32, "batch_size": 16, "eval_batch_size": 8,
             "threads": 1} if check.smoke else {})
    result = train_run(check, "char_lstm", "shakespeare-lstm",
                       {"data": str(text), "device": check.device, "epochs": 1, **tiny})
    return {**result, "data": what}


STEPS: list[tuple[str, Callable[[Check], dict[str, Any]], float]] = [  # name, step, seconds it needs on a GPU
    ("environment", step_environment, 1),
    ("fashion_cnn", step_fashion_cnn, 30),
    ("fashion_cnn_cpu", step_fashion_cnn_cpu, 60),
    ("fp32", precision_step("fp32"), 20),
    ("bf16", precision_step("bf16"), 20),
    ("fp16", precision_step("fp16"), 20),
    ("compile", step_compile, 90),
    ("cifar10_resnet", step_cifar10_resnet, 60),
    ("ddp", step_ddp, 45),
    ("char_lstm", step_char_lstm, 30),
]


def run_step(check: Check, name: str, step: Callable[[Check], dict[str, Any]], needs_s: float) -> dict[str, Any]:
    """One step's row: what it measured, or why it failed or was skipped; its seconds and peak GPU memory."""
    left = check.deadline - time.perf_counter()
    if not check.smoke and left < needs_s:
        return {"ok": False, "skipped": f"time budget: {left:.0f} s left, the step needs about {needs_s:.0f} s"}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        row = {"ok": True, **step(check)}
    except subprocess.TimeoutExpired as error:
        row = {"ok": False, "error": f"timed out after {error.timeout:.0f} s"}
    except Exception as error:  # noqa: BLE001 - any failure of a step is a result to report
        row = {"ok": False, "error": f"{type(error).__name__}: {error}".strip()[:2000],
               "where": traceback.format_exc().strip().splitlines()[-3:]}
    row["seconds"] = round(time.perf_counter() - start, 2)
    if torch.cuda.is_available():
        row["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def compare(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures side by side: device vs CPU accuracy and speed, each precision and compile vs fp32."""
    out: dict[str, Any] = {}
    gpu, cpu = steps.get("fashion_cnn", {}), steps.get("fashion_cnn_cpu", {})
    if gpu.get("test_accuracy") is not None and cpu.get("test_accuracy") is not None:
        out["fashion_cnn_accuracy"] = {"device": gpu["test_accuracy"], "cpu": cpu["test_accuracy"],
                                       "difference": round(gpu["test_accuracy"] - cpu["test_accuracy"], 4),
                                       "note": CPU_ACCURACY_NOTE}
        out["fashion_cnn_speedup_vs_cpu"] = round(gpu["steady_train_per_s"] / cpu["steady_train_per_s"], 2)
    base = steps.get("fp32", {}).get("steady_train_per_s")
    if base:
        out["steady_ratio_to_fp32"] = {name: round(steps[name]["steady_train_per_s"] / base, 3)
                                       for name in ("bf16", "fp16", "compile") if steps.get(name, {}).get("ok")}
    return out


def locate_data(fashion: str | None, text: str | None) -> tuple[Path | None, Path | None]:
    """Real Fashion-MNIST and Tiny Shakespeare where found without downloading, else None; a folder
    or file given on the command line must hold the data (a ``DataError`` naming it otherwise)."""
    from nnlab.data.sources import locate
    from nnlab.data.text import SHAKESPEARE
    from nnlab.data.vision import FASHION_MNIST
    from nnlab.errors import DataError
    if text is not None and not Path(text).is_file():
        raise DataError(f"--text {text}: no such file")
    try:
        found, _ = locate(FASHION_MNIST.spec, fashion, download=False)
    except DataError:
        if fashion is not None:
            raise
        found = None
    if text is None:
        try:
            directory, _ = locate(SHAKESPEARE, None, download=False)
            text = str(directory / SHAKESPEARE.files[0].name)
        except DataError:
            pass
    return found, Path(text) if text is not None else None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--smoke", action="store_true", help="everything tiny: checks the check itself")
    parser.add_argument("--out", type=Path, help="where gpu_check.json and the logs go (default $OUT or a temp folder)")
    parser.add_argument("--work", type=Path, help="run directories and generated data (default: a temp folder, removed)")
    parser.add_argument("--fashion", help="the Fashion-MNIST folder (default: $NNLAB_DATA or the system folder)")
    parser.add_argument("--text", help="Tiny Shakespeare's input.txt (default: $NNLAB_DATA)")
    parser.add_argument("--steps", help=f"comma-separated subset of: {', '.join(n for n, _, _ in STEPS)}")
    parser.add_argument("--budget", type=float, default=TIME_BUDGET_S, help="seconds the whole check may take")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    known = [n for n, _, _ in STEPS]
    args.step_names = known if not args.steps else [s for s in args.steps.split(",") if s]
    unknown = [s for s in args.step_names if s not in known]
    if unknown:
        parser.error(f"--steps: unknown {unknown}; known: {', '.join(known)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.ddp_worker:
        ddp_worker(args)
        return 0
    start = time.perf_counter()
    out = args.out or Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu-check-out-"))
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    if args.smoke and "NNLAB_CACHE" not in os.environ:
        os.environ["NNLAB_CACHE"] = str(work / "cache")  # the smoke run's decoded data stays in its own folder
    from nnlab.errors import NnlabError
    try:
        fashion, text = locate_data(args.fashion, args.text)
    except NnlabError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return 2
    check = Check(args.device, args.smoke, out, work, fashion, text, start + args.budget)
    result: dict[str, Any] = {"command": "benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                              "device": args.device, "smoke": args.smoke, "budget_s": args.budget, "steps": {}}
    try:
        for name, step, needs_s in STEPS:
            if name not in args.step_names:
                continue
            row = run_step(check, name, step, needs_s)
            result["steps"][name] = row
            print(f"gpu_check: {name}: {'ok' if row['ok'] else row.get('error') or row.get('skipped')} "
                  f"({row.get('seconds', 0)} s)", file=sys.stderr, flush=True)
            write_atomic(out / "gpu_check.json", json.dumps(result, indent=2))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result["comparison"] = compare(result["steps"])
    result["failed"] = [name for name, row in result["steps"].items() if not row["ok"] and "skipped" not in row]
    result["skipped"] = [name for name, row in result["steps"].items() if "skipped" in row and not row["ok"]]
    result["total_s"] = round(time.perf_counter() - start, 1)
    write_atomic(out / "gpu_check.json", json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return 0 if not result["failed"] and not result["skipped"] else 3


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        code = main()
        sys.stdout.flush()
        sys.stderr.flush()
        # Not sys.exit: after torch.compile, interpreter shutdown waited on inductor's compile
        # workers past the check's time limit, with the JSON already printed.
        os._exit(code)
