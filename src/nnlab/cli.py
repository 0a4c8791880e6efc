"""The ``nnlab`` command: argparse subcommands that parse, call one library function, and print.

User errors (``NnlabError``) become one line on stderr and exit code 2; bugs keep their
tracebacks. Every command has ``--json``: its last stdout line is then one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from nnlab.errors import NnlabError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def cmd_recipes(args: argparse.Namespace) -> None:
    from nnlab.recipes import RECIPES
    rows = [{"name": r.name, "dataset": r.config.dataset, "model": r.config.model,
             "description": r.description, "expected": r.expected} for r in RECIPES.values()]
    if args.json:
        _print_json(rows)
        return
    for r in rows:
        print(f"{r['name']:<14} {r['dataset']:<14} {r['model']:<6} {r['description']}  [{r['expected']}]")


def cmd_datasets(args: argparse.Namespace) -> None:
    from nnlab.data.vision import describe_datasets
    rows = describe_datasets(args.data)
    if args.json:
        _print_json(rows)
        return
    for r in rows:
        print(f"{r['name']:<14} {r['description']}\n{'':<14} {r['location']}")


def cmd_download(args: argparse.Namespace) -> None:
    from nnlab.data.sources import fetch
    from nnlab.data.vision import dataset_info
    path = fetch(dataset_info(args.dataset).spec, args.out)
    _print_json({"dataset": args.dataset, "path": str(path)}) if args.json else print(path)


def cmd_train(args: argparse.Namespace) -> None:
    from nnlab.config import parse_set_args
    from nnlab.runs import train
    overrides = parse_set_args(args.set or [])
    for flag in ("epochs", "batch_size", "lr", "seed", "data", "device"):
        value = getattr(args, flag)
        if value is not None:
            overrides[flag] = value
    summary = train(args.recipe, out=args.out, overrides=overrides, dry_run=args.dry_run)
    if args.json:
        _print_json(summary)
        return
    print(f"test accuracy {summary['test_accuracy']:.4f}  train {summary['train_seconds']:.1f}s  "
          f"{summary['images_per_s']:.0f} img/s  run: {summary['run_dir']}")


def cmd_eval(args: argparse.Namespace) -> None:
    from nnlab.runs import evaluate
    result = evaluate(args.run_dir, data_path=args.data, device_name=args.device)
    if args.json:
        _print_json(result)
        return
    print(f"test accuracy {result['test_accuracy']:.4f}  (summary.json: {result.get('summary_test_accuracy')})")
    for name, row in result["per_class"].items():
        print(f"  {name:<12} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}")
    pairs = ", ".join(f"{t} as {p} ({n})" for t, p, n in result["most_confused"])
    print(f"most confused: {pairs}")


def cmd_predict(args: argparse.Namespace) -> None:
    from nnlab.runs import predict
    results = predict(args.run_dir, args.files, top_k=args.top_k, invert=args.invert)
    if args.json:
        _print_json(results)
        return
    for r in results:
        tops = "  ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
        print(f"{r['file']}: {tops}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnlab", description="Train, evaluate and use deep-learning models on real data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print the result as one JSON object (last stdout line)")
        p.set_defaults(func=func)
        return p

    add("recipes", cmd_recipes, "list the named training recipes")
    p = add("datasets", cmd_datasets, "list datasets and where each is found (or how to get it)")
    p.add_argument("--data", help="also look in this directory")
    p = add("download", cmd_download, "download a dataset from its upstream URLs into the cache (checksummed)")
    p.add_argument("dataset")
    p.add_argument("--out", help="target directory (default: the nnlab cache)")

    p = add("train", cmd_train, "train a recipe into a run directory")
    p.add_argument("recipe", help="recipe name (see `nnlab recipes`)")
    p.add_argument("--out", help="run directory (default: runs/RECIPE-<timestamp>)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--data", help="dataset directory (overrides the search of $NNLAB_DATA, cache and system dirs)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="a few batches only: check the whole path quickly")

    p = add("eval", cmd_eval, "reload a run's best checkpoint and score it on the test split")
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset directory")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])

    p = add("predict", cmd_predict, "classify image files with a trained run")
    p.add_argument("run_dir")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--top-k", type=int, default=3, dest="top_k")
    p.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                   help="invert grey levels (auto: when the background is light, as in photos of objects)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnlab`` script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except NnlabError as error:
        print(f"nnlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nnlab: interrupted", file=sys.stderr)
        return 130
    return 0
