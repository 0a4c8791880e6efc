"""The ``nnlab`` command: argparse subcommands that parse, call one library function, and print.

User errors (``NnlabError``) become one line on stderr and exit code 2; bugs keep their
tracebacks. Every command has ``--json``: its last stdout line is then one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from nnlab.engine.choices import DEVICES, SCHEDULES
from nnlab.errors import ConfigError, NnlabError


def _print_json(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def cmd_recipes(args: argparse.Namespace) -> None:
    from nnlab.recipes import RECIPES
    rows = [{"name": r.name, "kind": r.kind, "dataset": getattr(r.config, "dataset", None),
             "model": getattr(r.config, "model", None), "description": r.description, "expected": r.expected}
            for r in RECIPES.values()]
    if args.json:
        _print_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['dataset'] or '-':<14} {r['model'] or '-':<8} "
              f"{r['description']}  [{r['expected']}]")


def cmd_datasets(args: argparse.Namespace) -> None:
    from nnlab.data.catalog import describe_all
    rows = describe_all(args.data)
    if args.json:
        _print_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['description']}\n{'':<{width}}  {r['location']}")


def options_datasets(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab datasets``."""
    p.add_argument("--data", help="also look in this directory")


def cmd_download(args: argparse.Namespace) -> None:
    from nnlab.data.catalog import download
    result = download(args.dataset, args.out)
    _print_json(result) if args.json else print(f"{result['path']} ({result['summary']})")


def options_download(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab download``."""
    p.add_argument("dataset", help="a name from `nnlab datasets`: fashion-mnist, mnist, cifar10, cifar100, "
                                   "text, names, eng-fra")
    p.add_argument("--out", help="target directory (default: the nnlab cache)")


def without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            out.append(item)
    return out


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """``nnlab train --nproc N ...``: the same command under ``torchrun --nproc_per_node N`` (one
    machine; for several, call torchrun yourself: see docs/scaling.md). Returns its exit code."""
    import subprocess
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "nnlab", *argv]
    return subprocess.call(command)


# Flags of `nnlab train` that become config overrides (a flag that does not apply to the
# recipe's kind of run is refused by apply_overrides, naming it).
# Flags of `nnlab train` that become config overrides (a flag that does not apply to the
# recipe's kind of run is refused by apply_overrides, naming it); each kind's own flags come from
# its class (`Kind.options`) and are added to these.
TRAIN_FLAGS = ("epochs", "batch_size", "lr", "seed", "data", "device", "model", "time_budget",
               "schedule", "cycles", "cycle_mult", "lr_mult", "freeze", "clip", "patience", "monitor",
               "precision", "compile", "channels_last", "threads", "freeze_epochs")


def add_kind_options(parser: argparse.ArgumentParser) -> tuple[str, ...]:
    """Each kind's own ``nnlab train`` flags, in a group per kind (a flag several kinds share is added
    once, with the first); returns the config fields they set."""
    from nnlab.kinds import all_kinds
    seen: dict[str, str] = {}
    for kind in all_kinds():
        fresh = [option for option in kind.options if option.flag not in seen]
        if not fresh:
            continue
        group = parser.add_argument_group(f"{kind.what}s ({kind.name})")
        for option in fresh:
            group.add_argument(option.flag, dest=option.dest, help=option.help, type=option.type,
                               choices=option.choices, metavar=option.metavar)
            seen[option.flag] = option.dest
    return tuple(dict.fromkeys(seen.values()))


def check_nproc(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    """``--nproc``: only kinds whose batches the kit can shard over processes (capability ``ddp``), and
    the settings and ``--out`` checked here, before torchrun starts: an error then is one line and exit
    2, where a rank's error would come back as torchrun's traceback and exit 1."""
    from nnlab.kinds import get_kind, kind_of_run, takers
    from nnlab.kit.rundir import new_run_dir
    from nnlab.recipes import recipe_config
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    if args.resume:
        kind = kind_of_run(args.resume)
    elif args.recipe:
        config = recipe_config(args.recipe, overrides)
        kind = get_kind(config.kind)
        if args.out:
            new_run_dir(config.recipe, args.out, create=False, force=args.force)
    else:
        kind = None
    if kind is not None and not kind.supports("ddp"):
        raise ConfigError(f"--nproc: a {kind.what} cannot be split over processes; --nproc takes the recipes of "
                          f"these kinds: {', '.join(takers('ddp'))}")


def cmd_train(args: argparse.Namespace) -> None:
    from nnlab.config import parse_set_args
    from nnlab.recipes import train
    overrides = parse_set_args(args.set or [])
    for flag in (*TRAIN_FLAGS, *args.kind_flags):
        value = getattr(args, flag)
        if value is not None:
            overrides[flag] = value
    if args.nproc is not None and "WORLD_SIZE" not in os.environ:
        check_nproc(args, overrides)
        raise SystemExit(launch_torchrun(args.nproc, without_option(args.argv, "--nproc")))
    if args.resume and (args.recipe or args.out or args.force):
        raise ConfigError("--resume RUN_DIR continues that run: give no recipe, --out or --force with it")
    summary = train(args.recipe, out=args.out, overrides=overrides, dry_run=args.dry_run, resume=args.resume,
                    force=args.force)
    if summary.get("rank", 0) != 0:  # other ranks of a torchrun job: rank 0 reports
        return
    if "stopped_after_epochs" in summary:
        _print_json(summary) if args.json else print(
            f"stopped after {summary['stopped_after_epochs']} epochs; continue with: {summary['resume']}")
        return
    if args.json:
        _print_json(summary)
        return
    print(_headline(summary) + f"  run: {summary['run_dir']}")


def options_train(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab train``."""
    p.add_argument("recipe", nargs="?", help="recipe name (see `nnlab recipes`)")
    p.add_argument("--out", help="run directory (default: runs/RECIPE-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--force", action="store_true", help="let --out be a directory that holds a run (the new run "
                                                        "replaces it) or other files (written among them)")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="fine-tune: --freeze-epochs of the head alone, then every layer group (with --lr-mult)")
    p.add_argument("--freeze-epochs", type=int, dest="freeze_epochs",
                   help="fine-tune schedule and digits-transfer: epochs that train the head only (default 1)")
    p.add_argument("--cycles", type=int, help="sgdr: cosine cycles (a snapshot at the end of each)")
    p.add_argument("--cycle-mult", type=int, dest="cycle_mult", help="sgdr: growth factor of each cycle's length")
    p.add_argument("--lr-mult", type=float, dest="lr_mult",
                   help="discriminative LRs: each earlier layer group trains at this times the next one's LR")
    p.add_argument("--freeze", metavar="GROUPS", help="layer groups not to train: body (all but the head), stem, head")
    p.add_argument("--unfreeze", action="store_const", const=(), dest="freeze", help="train every layer group")
    p.add_argument("--clip", type=float, help="clip the gradient norm to this value")
    p.add_argument("--patience", type=int, help="early stopping: epochs without improvement of --monitor")
    p.add_argument("--monitor", choices=["valid_acc", "valid_loss", "train_acc", "train_loss"],
                   help="the metric that picks best.pt and drives early stopping (default valid_acc)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, dest="channels_last",
                   help="channels-last memory layout for conv nets")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--nproc", type=int, help="train with N processes on this machine (DistributedDataParallel "
                                              "through torchrun; --batch-size stays the global batch)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--data", help="dataset directory (overrides the search of $NNLAB_DATA, cache and system dirs)")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="a few batches only: check the whole path quickly")
    p.add_argument("--model", help="model name; tabular runs: logistic or mlp")
    p.set_defaults(kind_flags=())
    p.add_argument("--time-budget", type=float, dest="time_budget", metavar="SECONDS",
                   help="stop training (validated, best kept) within SECONDS; the schedule fits it and the epoch "
                        "limit is lifted (--epochs alone trains that many epochs, also in a recipe with a budget)")


def _headline(result: dict[str, Any]) -> str:
    """The line a summary or an evaluation is shown as: its kind's headline."""
    from nnlab.kinds import get_kind
    return get_kind(result.get("kind") or "image").headline(result)


def cmd_lr_find(args: argparse.Namespace) -> None:
    from nnlab.config import parse_set_args
    from nnlab.recipes import lr_find
    overrides = parse_set_args(args.set or [])
    for flag in ("batch_size", "data", "device", "seed"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    found = lr_find(args.recipe, out=args.out, overrides=overrides, steps=args.steps,
                    start_lr=args.start_lr, end_lr=args.end_lr)
    if args.json:
        _print_json({k: found[k] for k in ("suggested_lr", "steepest_lr", "min_over_10_lr", "steps", "plot")})
        return
    print(f"suggested lr {found['suggested_lr']:.3g} (minimum/10)  steepest {found['steepest_lr']:.3g}  "
          f"after {found['steps']} steps; plot: {found['plot']}")


def options_lr_find(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab lr-find``."""
    p.add_argument("recipe", help="recipe name (see `nnlab recipes`)")
    p.add_argument("--out", help="where to write lr_find.png and lr_find.json (default: runs/RECIPE-lrfind-<timestamp>)")
    p.add_argument("--steps", type=int, default=200, help="batches in the sweep at most (default 200)")
    p.add_argument("--start-lr", type=float, default=1e-7, dest="start_lr")
    p.add_argument("--end-lr", type=float, default=10.0, dest="end_lr")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--seed", type=int)
    p.add_argument("--data", help="dataset directory")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field (repeatable)")


def cmd_eval(args: argparse.Namespace) -> None:
    from nnlab.kinds import kind_of_run, load, options_of
    kind = kind_of_run(args.run_dir)
    given = {"ensemble": args.ensemble, "classifier": args.classifier, "temperature": args.temperature,
             "top_k": args.top_k}
    options = options_of(kind, given, kind.eval_options, args.run_dir)
    result = load(args.run_dir).evaluate(args.data, device_name=args.device, **options)
    result.setdefault("kind", kind.name)
    if args.json:
        _print_json(result)
        return
    if "summary_test_accuracy" in result:
        print(f"{_headline(result)}  (summary.json: {result['summary_test_accuracy']})")
    else:
        print(_headline(result))
    for name, row in result.get("per_class", {}).items():
        print(f"  {name:<12} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}")
    if result.get("most_confused"):
        pairs = ", ".join(f"{t} as {p} ({n})" for t, p, n in result["most_confused"])
        print(f"most confused: {pairs}")


def options_eval(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab eval``."""
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset directory")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--ensemble", choices=["snapshots"],
                   help="average the predictions of the SGDR snapshots (snapshots/cycle-K.pt) instead")
    p.add_argument("--classifier", metavar="NAMES_RUN",
                   help="name-generation runs: the names run that judges the language of the sampled names")
    p.add_argument("--temperature", type=float,
                   help="name-generation runs: sample the judged names at this temperature (default: the run's)")
    p.add_argument("--top-k", type=int, dest="top_k",
                   help="name-generation runs: sample them from the K likeliest letters (default: the run's)")


def cmd_predict(args: argparse.Namespace) -> None:
    from nnlab.kinds import kind_of_run, load, options_of
    kind = kind_of_run(args.run_dir)
    given = {"invert": args.invert, "csv": args.csv, "output": args.output, "explain": args.explain or None}
    options = options_of(kind, given, kind.predict_options, args.run_dir)
    results = load(args.run_dir).predict(args.files, top_k=args.top_k, **options)
    if args.json:
        _print_json(results)
        return
    if isinstance(results, dict):  # a table of predictions written to a file (tabular runs)
        print(f"{results['rows']} predictions written to {results['out']}")
        return
    for r in results:
        if "translation" in r:  # translation runs
            print(f"{r['source']}: {r['translation']}")
            continue
        tops = "  ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
        print(f"{r['file']}: {tops}")
        if "words" in r:  # --explain: the words by attention weight
            print("  " + " ".join(f"{w['word']}({w['weight']:.2f})" for w in r["words"]))
    if results and "explanation" in results[0]:
        print(f"heat strip: {results[0]['explanation']}", file=sys.stderr)


def options_predict(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab predict``."""
    p.add_argument("run_dir")
    p.add_argument("files", nargs="*", metavar="INPUT",
                   help="image files or folders of them (image runs) or other inputs the run takes")
    p.add_argument("--top-k", type=int, default=3, dest="top_k")
    p.add_argument("--invert", choices=["auto", "yes", "no"],
                   help="images: invert grey levels (default auto: when the background is light, as in photos)")
    p.add_argument("--csv", help="tabular, perceptron and text-classification runs: the CSV of rows to predict; "
                                 "image runs: the CSV to write every image's prediction to (give files or folders)")
    p.add_argument("-o", "--output", help="with --csv: the predictions CSV to write "
                                          "(default NEW.predictions.csv beside the input); with --explain: "
                                          "the PNG heat strip of the words")
    p.add_argument("--explain", action="store_true",
                   help="text-classification runs trained with --set pooling=attention: each word's attention weight")


def cmd_translate(args: argparse.Namespace) -> None:
    from nnlab.kinds import require
    from nnlab.kinds import load
    require(args.run_dir, "translate", "translate")
    results = load(args.run_dir).translate(args.sentences, beam=args.beam, attention=args.attention,
                                           device_name=args.device)
    if args.json:
        _print_json(results)
        return
    for r in results:
        print(r["translation"] if len(results) == 1 else f"{r['source']} -> {r['translation']}")
    if "attention" in results[0]:
        print(f"attention: {results[0]['attention']}", file=sys.stderr)


def options_translate(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab translate``."""
    p.add_argument("run_dir")
    p.add_argument("sentences", nargs="+", metavar="SENTENCE")
    p.add_argument("--beam", type=int, default=1, help="beam-search width (default 1: greedy)")
    p.add_argument("--attention", metavar="OUT.png", help="draw the first sentence's attention matrix to this PNG")
    p.add_argument("--device", choices=DEVICES)


def cmd_sample(args: argparse.Namespace) -> None:
    from nnlab.kinds import options_of, require
    from nnlab.kinds import load
    kind = require(args.run_dir, "sample", "sample")
    given = {"category": args.category, "start": args.start, "count": args.count}
    options = options_of(kind, given, kind.sample_options, args.run_dir)
    result = load(args.run_dir).sample(prime=args.prime, length=args.length, temperature=args.temperature,
                                       top_k=args.top_k, seed=args.seed, device_name=args.device, **options)
    _print_json(result) if args.json else print(result["text"])


def options_sample(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab sample``."""
    p.add_argument("run_dir")
    p.add_argument("--prime", help="text to start from (default: a newline)")
    p.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=float, default=0.8, help="below 1: safer, above 1: wilder (default 0.8)")
    p.add_argument("--top-k", type=int, dest="top_k", help="draw only from the K most likely characters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--category", help="name-generation runs: the language to generate names in")
    p.add_argument("--start", help="name-generation runs: start letters, one name per letter (e.g. RUS)")
    p.add_argument("--count", type=int, help="name-generation runs: names to draw (default 20; per letter with --start)")
    p.add_argument("--device", choices=DEVICES)


def cmd_export(args: argparse.Namespace) -> None:
    from nnlab.commands.export import export
    meta = export(args.run_dir, args.format, out=args.output, data_path=args.data)
    if args.json:
        _print_json(meta)
        return
    check = meta["check"]
    print(f"{meta['file']} ({meta['format']}, {meta['bytes']} bytes); metadata {meta['metadata']}\n"
          f"check: max |logit diff| {check['max_abs_diff']:.2g} <= {check['tolerance']:.2g} on {check['inputs']} "
          f"test images, top-1 agreement {check['top1_agreement']:.0%}")


def options_export(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab export``."""
    p.add_argument("run_dir")
    p.add_argument("--format", required=True, choices=["torchscript", "onnx", "safetensors"])
    p.add_argument("-o", "--output", help="file to write (default RUN_DIR/model.<format>); metadata goes to FILE.json")
    p.add_argument("--data", help="dataset directory for the check's test images")


def cmd_serve(args: argparse.Namespace) -> None:
    from nnlab.commands.serve import serve

    def ready(info: dict[str, Any]) -> None:
        served = ", ".join(info["models"] + ([f"the runs in {info['runs']}"] if info["runs"] else []))
        _print_json(info) if args.json else print(f"serving {served} on {info['url']}", flush=True)

    serve(args.run_dirs, host=args.host, port=args.port, device=args.device, batch_wait_ms=args.batch_wait_ms,
          max_batch=args.max_batch, max_bytes=args.max_mb * 2**20, on_ready=ready, runs_root=args.runs,
          backend=args.backend, header_timeout=args.header_timeout)


def options_serve(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab serve``."""
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="runs to serve, each named by its directory")
    p.add_argument("--runs", metavar="DIR", help="folder of runs to browse on the page (default runs/ where it exists)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--max-batch", type=int, default=64, dest="max_batch",
                   help="most concurrent requests run as one batch (default 64)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, dest="batch_wait_ms",
                   help="how long a request waits for others to batch with (default 2 ms)")
    p.add_argument("--max-mb", type=float, default=8.0, dest="max_mb", help="request size limit in MiB (default 8)")
    p.add_argument("--header-timeout", type=float, default=5.0, dest="header_timeout", metavar="S",
                   help="close a connection whose request headers are not all there after S seconds (default 5)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="what computes image runs' predictions: the PyTorch model, or its ONNX graph through "
                        "onnxruntime (RUN/model.onnx from `nnlab export`, or exported at start-up; checked "
                        "against PyTorch before it serves); auto (default): onnx on the CPU, torch on a GPU")


def cmd_summary(args: argparse.Namespace) -> None:
    from nnlab.commands.explain import model_summary
    from nnlab.inspection.summary import parse_shape
    result = model_summary(args.target, parse_shape(args.input) if args.input else None)
    if args.json:
        _print_json(result)
        return
    print(f"{result['model']} on input {'x'.join(map(str, result['input_shape']))}")
    print(f"{'layer':<32} {'type':<20} {'output':<16} {'params':>10} {'mult-adds':>14}")
    for row in result["layers"]:
        shape = "x".join(map(str, row["output_shape"]))
        print(f"{row['name']:<32} {row['type']:<20} {shape:<16} {row['params']:>10,} {row['mult_adds']:>14,}")
    print(f"total params {result['total_params']:,} (trainable {result['trainable_params']:,}), "
          f"mult-adds per image {result['total_mult_adds']:,}")


def options_summary(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab summary``."""
    p.add_argument("target", metavar="RECIPE|RUN_DIR")
    p.add_argument("--input", metavar="C,H,W", help="input size (default: the dataset's, or the run's)")


def cmd_cam(args: argparse.Namespace) -> None:
    from nnlab.commands.explain import class_activation
    result = class_activation(args.run_dir, args.image, class_name=args.class_name, out=args.output,
                              layer=args.layer, invert=args.invert)
    _print_json(result) if args.json else print(
        f"{result['output']}: {result['class']} (p={result['probability']:.3f}), predicted {result['predicted']}")


def options_cam(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab cam``."""
    p.add_argument("run_dir")
    p.add_argument("image")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="class to explain (default: the predicted one)")
    p.add_argument("--layer", help="module name to explain (default: the last conv feature map)")
    p.add_argument("--invert", default="auto", choices=["auto", "yes", "no"], help="as for predict")
    p.add_argument("-o", "--output", help="PNG to write (default IMAGE.cam.png beside the image)")


def cmd_filters(args: argparse.Namespace) -> None:
    from nnlab.commands.explain import layer_filters
    result = layer_filters(args.run_dir, layer=args.layer, image=args.image, out=args.out, invert=args.invert)
    if args.json:
        _print_json(result)
        return
    print(f"{result['layer']}: {result['filters']} filters of {'x'.join(map(str, result['filter_shape']))} "
          f"-> {result['filters_png']}" + (f"; feature maps -> {result['featuremaps_png']}" if args.image else ""))


def options_filters(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab filters``."""
    p.add_argument("run_dir")
    p.add_argument("--layer", help="conv layer name (default: the first)")
    p.add_argument("--image", help="also draw this image's feature maps at that layer")
    p.add_argument("--invert", default="auto", choices=["auto", "yes", "no"], help="as for predict")
    p.add_argument("--out", help="directory for filters.png and featuremaps.png (default: the run)")


def cmd_interpret(args: argparse.Namespace) -> None:
    from nnlab.commands.explain import interpret
    result = interpret(args.run_dir, split=args.split, top=args.top, out=args.out, data_path=args.data,
                       device_name=args.device)
    if args.json:
        _print_json(result)
        return
    print(f"{result['split']} split: {result['images']} images, accuracy {result['accuracy']:.4f}")
    for name, row in result["per_class"].items():
        print(f"  {name:<12} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}")
    if result["most_confused"]:
        print("most confused: " + ", ".join(f"{t} as {p} ({n})" for t, p, n in result["most_confused"]))
    print(f"confusion matrix: {result['confusion_png']}\nhighest losses: {result['top_losses_png']}")


def options_interpret(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab interpret``."""
    p.add_argument("run_dir")
    p.add_argument("--split", default="valid", choices=["valid", "test"],
                   help="the run's validation split (as training drew it; default) or the test split")
    p.add_argument("--top", type=int, default=16, help="highest-loss images to draw (default 16)")
    p.add_argument("--out", help="directory for confusion.png and top_losses.png (default RUN_DIR/interpret-SPLIT)")
    p.add_argument("--data", help="dataset directory")
    p.add_argument("--device", choices=DEVICES)


def cmd_convolve(args: argparse.Namespace) -> None:
    from nnlab.inspection.filters import convolve
    result = convolve(args.image, args.kernel, pool=args.pool, size=args.size, out=args.output)
    _print_json(result) if args.json else print(
        f"{result['output']}: {'x'.join(map(str, result['input_shape']))} -> "
        f"{'x'.join(map(str, result['output_shape']))}, values {result['min']:.3g}..{result['max']:.3g}")


def options_convolve(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab convolve``."""
    p.add_argument("image")
    p.add_argument("--kernel", required=True, metavar="NAME|FILE.txt",
                   help="sobel-x, sobel-y, laplacian, sharpen, blur, or a text file of kernel rows")
    p.add_argument("--pool", choices=["max", "avg"], help="pool the result")
    p.add_argument("--size", type=int, default=2, help="pooling window and stride (default 2)")
    p.add_argument("-o", "--output", help="PNG to write (default IMAGE.KERNEL.png beside the image)")


def cmd_stylize(args: argparse.Namespace) -> None:
    from nnlab.workflows.stylize import stylize
    result = stylize(args.content, args.style, args.output, size=args.size, steps=2 if args.dry_run else args.steps,
                     optimizer=args.optimizer, lr=args.lr, content_weight=args.content_weight,
                     style_weight=args.style_weight, tv_weight=args.tv_weight, style_layers=args.style_layers,
                     content_layer=args.content_layer, init=args.init, preserve_color=args.preserve_color,
                     weights=args.weights, device=args.device, save_every=args.save_every, seed=args.seed,
                     precision=args.precision)
    if args.json:
        _print_json(result)
        return
    losses = result["losses"]
    print(f"{result['output']}: {result['size'][0]}x{result['size'][1]}, {result['steps']} {result['optimizer']} steps "
          f"in {result['seconds']:.1f}s; loss {losses['total']:.4g} (content {losses['content']:.4g}, "
          f"style {losses['style']:.4g}, tv {losses['tv']:.4g}), from {result['initial_losses']['total']:.4g}")


def options_stylize(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab stylize``."""
    p.add_argument("content")
    p.add_argument("style")
    p.add_argument("-o", "--output", help="PNG to write (default CONTENT.stylized.png beside the content image)")
    p.add_argument("--size", type=int, default=512, help="longer side of both images in px, aspect kept (default 512, "
                                                          "at most 2048)")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300)")
    p.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"])
    p.add_argument("--lr", type=float, help="step size (default: 1 for lbfgs, 0.02 for adam)")
    p.add_argument("--content-weight", type=float, default=1.0, dest="content_weight", help="alpha (default 1)")
    p.add_argument("--style-weight", type=float, default=1e6, dest="style_weight", help="beta (default 1e6)")
    p.add_argument("--tv-weight", type=float, default=0.0, dest="tv_weight",
                   help="total-variation weight: smooths the image (default 0)")
    p.add_argument("--style-layers", default="conv1_1,conv2_1,conv3_1,conv4_1,conv5_1", dest="style_layers",
                   metavar="LAYER[:W],...", help="VGG19 layers of the style loss, each with an optional weight "
                                                 "(default conv1_1,conv2_1,conv3_1,conv4_1,conv5_1, all 1)")
    p.add_argument("--content-layer", default="conv4_2", dest="content_layer", help="VGG19 layer of the content loss")
    p.add_argument("--init", default="content", choices=["content", "noise"], help="start image (default content)")
    p.add_argument("--preserve-color", action="store_true", dest="preserve_color",
                   help="transfer luminance only: keep the content's colours")
    p.add_argument("--weights", metavar="PATH|random", help="VGG19 weights: torchvision's vgg19-dcbb9e9d.pth "
                   "(default: from $TORCH_HOME/hub/checkpoints/), a state-dict file, or random (untrained)")
    p.add_argument("--save-every", type=int, default=0, dest="save_every", metavar="N",
                   help="also write every N-th step as OUT.stepNNNN.png")
    p.add_argument("--seed", type=int, default=0, help="noise init and random weights")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="VGG19 in bf16 autocast: ~1.9x faster on CPUs with native bf16 (default fp32, the reference)")
    p.add_argument("--dry-run", action="store_true", dest="dry_run", help="2 steps only: check the whole path quickly")


def cmd_runs(args: argparse.Namespace) -> None:
    from nnlab.commands.runs import format_runs, list_runs
    rows = list_runs(args.dir)
    if args.json:
        _print_json({"root": args.dir, "runs": rows})
        return
    print(format_runs(rows) if rows else f"no runs under {args.dir}")


def options_runs(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab runs``."""
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="where to look (default runs/)")


def cmd_compare(args: argparse.Namespace) -> None:
    from nnlab.commands.runs import compare, format_compare
    result = compare(args.run_dirs, out=args.output)
    _print_json(result) if args.json else print(format_compare(result))


def options_compare(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab compare``."""
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--output", default="compare.png", help="PNG of the overlaid curves (default compare.png)")


def _experiment_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--set`` items and the train flags of ``nnlab sweep``/``nnlab ablate`` as config overrides."""
    from nnlab.config import parse_set_args
    overrides = parse_set_args(args.set or [])
    for flag in ("epochs", "data", "device"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    return overrides


def cmd_sweep(args: argparse.Namespace) -> None:
    from nnlab.commands.sweep import format_report, sweep
    summary = sweep(args.recipe, args.grid or [], seeds=1 if args.seeds is None else args.seeds,
                    search=args.search, trials=args.trials, metric=args.metric, out=args.out, storage=args.storage,
                    study=args.study, workers=args.workers, overrides=_experiment_overrides(args),
                    prune=args.prune, prune_startup=args.prune_startup, prune_warmup=args.prune_warmup)
    _print_json(summary) if args.json else print(format_report(summary))


def options_sweep(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab sweep``."""
    _add_experiment_flags(p)
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                   help="a setting and its values (repeatable); KEY=LOW..HIGH[:log] for random/tpe")
    p.add_argument("--search", default="grid", choices=["grid", "random", "tpe"])
    p.add_argument("--trials", type=int, help="random/tpe: settings to draw")
    p.add_argument("--prune", action="store_true", help="median pruning (Optuna's MedianPruner): train each trial "
                   "an epoch at a time and stop one whose best metric so far is worse than the median of the "
                   "finished trials at that epoch; its setting's other seeds are skipped")
    p.add_argument("--prune-startup", type=int, metavar="N", help="--prune: finished trials before any is pruned "
                   "(default 5)")
    p.add_argument("--prune-warmup", type=int, metavar="E", help="--prune: epochs every trial trains before it can "
                   "be pruned (default 1)")


def cmd_ablate(args: argparse.Namespace) -> None:
    from nnlab.commands.ablate import ablate, format_ablation
    summary = ablate(args.recipe, seeds=3 if args.seeds is None else args.seeds, metric=args.metric,
                     out=args.out, storage=args.storage, study=args.study, workers=args.workers,
                     overrides=_experiment_overrides(args))
    _print_json(summary) if args.json else print(format_ablation(summary))


def options_ablate(p: argparse.ArgumentParser) -> None:
    """The options of ``nnlab ablate``."""
    _add_experiment_flags(p)


def _add_experiment_flags(p: argparse.ArgumentParser) -> None:
    """The flags ``nnlab sweep`` and ``nnlab ablate`` share."""
    p.add_argument("recipe", help="recipe name (see `nnlab recipes`)")
    p.add_argument("--seeds", type=int, default=None, help="runs of each setting, seeds SEED..SEED+N-1 "
                                                         "(default: 1 for sweep, 3 for ablate)")
    p.add_argument("--metric", help="validation metric to rank by (default: the recipe's monitor, e.g. valid_acc)")
    p.add_argument("--out", help="folder of the runs and the report (default runs/sweep-RECIPE-<hash of the "
                                 "command>: the same command continues the same sweep)")
    p.add_argument("--storage", metavar="URL", help="Optuna database URL shared by every worker, e.g. "
                                                    "postgresql://user:pw@host/db (default sqlite:///OUT/sweep.db)")
    p.add_argument("--study", help="study name in --storage (default: the --out folder's name)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--data", help="dataset directory")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field in every run")


# Every command: its name, handler, one-line help and the function adding its options (next to the handler).
COMMANDS: tuple[tuple[str, Callable[[argparse.Namespace], None], str, Callable[[argparse.ArgumentParser], None] | None],
                ...] = (
    ("recipes", cmd_recipes, "list the named training recipes", None),
    ("datasets", cmd_datasets, "list datasets and where each is found (or how to get it)", options_datasets),
    ("download", cmd_download, "download a dataset from its upstream URLs into the cache, resumable, checked "
                                      "by md5 (or by structure where upstream publishes no checksum)", options_download),
    ("train", cmd_train, "train a recipe into a run directory", options_train),
    ("lr-find", cmd_lr_find, "sweep the learning rate exponentially and suggest one (model left untouched)", options_lr_find),
    ("eval", cmd_eval, "reload a run's best checkpoint and score it on the test split", options_eval),
    ("predict", cmd_predict, "predict with a trained run: image files, or a CSV of new rows (--csv)", options_predict),
    ("translate", cmd_translate, "translate sentences with a translation run (greedy or --beam K)", options_translate),
    ("sample", cmd_sample, "generate text from a character-level language model run, or names from a "
                                  "name-generation run", options_sample),
    ("export", cmd_export, "export an image run's model (TorchScript, ONNX, safetensors), checked against PyTorch", options_export),
    ("summary", cmd_summary, "per layer: output shape, parameters and multiply-adds of a recipe's or run's model", options_summary),
    ("cam", cmd_cam, "class activation map (Grad-CAM) of an image run on an image, as a heat-map overlay PNG", options_cam),
    ("filters", cmd_filters, "draw a run's conv filters as a grid, and the feature maps an image makes there", options_filters),
    ("interpret", cmd_interpret, "an image run's confusion matrix, most-confused classes, per-class "
                                          "precision/recall and its highest-loss images (PNGs)", options_interpret),
    ("convolve", cmd_convolve, "apply a hand-written kernel (and pooling) to an image and save the result", options_convolve),
    ("stylize", cmd_stylize, "neural style transfer (Gatys et al.): CONTENT painted in the manner of STYLE, as PNG", options_stylize),
    ("serve", cmd_serve, "serve runs over HTTP: JSON API, OpenAPI at /docs, and a studio page at / "
                                "(predict with Grad-CAM or attention, sample, translate; browse and compare runs)", options_serve),
    ("runs", cmd_runs, "list the run directories under DIR: recipe, kind, started, status (finished, "
                              "interrupted and resumable, broken and why), epochs, metric, seconds", options_runs),
    ("compare", cmd_compare, "compare runs: their config differences as a table, their curves overlaid", options_compare),
    ("sweep", cmd_sweep, "train every setting of a grid (or N from random search / TPE) with each seed on "
                                "one Optuna study; rank by the mean validation metric", options_sweep),
    ("ablate", cmd_ablate, "train a recipe in full and without each of its tricks, with each seed; "
                                  "report each trick's gain in the validation and test metric", options_ablate),
)


def build_parser(kind_options: bool = True) -> argparse.ArgumentParser:
    """The ``nnlab`` parser: one subcommand per ``COMMANDS`` row (and ``speedrun``); with ``kind_options``,
    ``nnlab train`` also gets each kind's own flags (importing the table of kinds, and so torch)."""
    parser = argparse.ArgumentParser(prog="nnlab", description="Train, evaluate and use deep-learning models on real data.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print the result as one JSON object (last stdout line)")
        p.add_argument("--offline", action="store_true", help="download no pretrained weights (as NNLAB_OFFLINE=1)")
        p.set_defaults(func=func)
        return p

    from nnlab.commands import speedrun  # its handler and options live in its own module
    for name, func, help_text, options in COMMANDS:
        p = add(name, func, help_text)
        if options is not None:
            options(p)
        if name == "train" and kind_options:
            p.set_defaults(kind_flags=add_kind_options(p))
    speedrun.add_arguments(add("speedrun", speedrun.cmd_speedrun, speedrun.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnlab`` script; returns the process exit code."""
    given = list(argv) if argv is not None else sys.argv[1:]
    # each kind's own train flags come from its class: imported (with torch) only for `nnlab train`
    args = build_parser(kind_options=bool(given) and given[0] == "train").parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if getattr(args, "offline", False):  # the environment also reaches torchrun's and sweep's workers
        os.environ["NNLAB_OFFLINE"] = "1"
    try:
        args.func(args)
    except NnlabError as error:
        print(f"nnlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nnlab ... | head`: the reader left; say nothing more, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # the filesystem refused a path: no such folder, read-only, no space, ...
        if error.filename is None:
            raise
        print(f"nnlab: error: {error.filename}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0
