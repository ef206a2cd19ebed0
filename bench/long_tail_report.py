"""The model comparison of issue 7: every model x seed x dataset through `sicot train` and
`sicot evaluate`, then the table (mean and spread over seeds) and the per-class plot.

    .venv/bin/python bench/long_tail_report.py --out /tmp/report \\
        --dataset default=/tmp/synth --dataset second=/tmp/synth2 --seeds 0 1 2 --jobs 2

Each run is `sicot train --data D --model M --out OUT/runs/D/M/seedS --epochs E
--image-size S --seed S --work-dir OUT/work/D` then `sicot evaluate --model ... --data D
--json .../evaluation.json`: the same commands a user runs, with the same input, model and
export code as the TFX Trainer. A run whose evaluation.json exists is not redone, so the
command resumes after an interruption. `--work-dir` is shared per dataset, so import and
Transform run once per dataset.

Writes OUT/results.json (every run's numbers and the aggregates), OUT/table.md (markdown, mean
+- sample standard deviation over seeds, and min..max for few-shot) and OUT/per_class.png
(image-only top-1 of every class against its training count, per model, averaged over seeds
and over classes in log-spaced count bins). Prints the aggregates as JSON.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import statistics
import subprocess
import sys
import time

from sicot import contract
from sicot.trainer.model.config import PRESET_NAMES

# Baselines first, then SICoT and its ablations (the report's column order).
MODELS = tuple(sorted(PRESET_NAMES, key=lambda m: m.startswith("sicot")))
BANDS = (contract.OVERALL, *contract.BANDS)
MODES = contract.QUERY_MODES
# The plain reference (bench/plain_reference.py), one per head: `--models plain_cosine ...`.
PLAIN_PREFIX = "plain_"
PLAIN_MODELS = tuple(PLAIN_PREFIX + h for h in ("ce", "logit_adjust", "cosine"))
# The linear-probe floor of the pretrained tower (bench/linear_probe.py): `--models probe_linear`.
PROBE_MODEL = "probe_linear"


def sicot_command():
    return [os.path.join(os.path.dirname(sys.executable), "sicot")]


def _training_options(argv) -> dict:
    """The options of a `sicot train` command line that change the result (not the paths)."""
    keep = ("--model", "--epochs", "--image-size", "--seed")
    options = {k: argv[i + 1] for i, k in enumerate(argv[:-1]) if k in keep}
    if "--head" in argv:  # bench/plain_reference.py
        options["--model"] = PLAIN_PREFIX + argv[argv.index("--head") + 1]
    if any(a.endswith("linear_probe.py") for a in argv):  # its own epochs
        options["--model"] = PROBE_MODEL
        options.pop("--epochs", None)
    options["--set"] = sorted(argv[i + 1] for i, k in enumerate(argv[:-1]) if k == "--set")
    return options


def _check_reused_run(run_dir, model, seed, args):
    """A finished run is reused only if it was trained with the options asked for now."""
    log = os.path.join(run_dir, "train.log")
    with open(log) as f:
        trained = _training_options(f.readline().split())
    wanted = _training_options((["bench/linear_probe.py"] if model == PROBE_MODEL else [])
                               + ["--model", model, "--epochs", str(args.epochs), "--image-size",
                                str(args.image_size), "--seed", str(seed)]
                               + [a for kv in _set_options(model, args) for a in ("--set", kv)])
    if trained != wanted:
        raise SystemExit(f"{run_dir}: finished with {trained}, but this call asks for {wanted}; "
                         f"use another --out (or delete the run) instead of mixing schedules")


def _set_options(model: str, args) -> list:
    """The --set options a run gets (the plain reference and the probe take none)."""
    return [] if model.startswith(PLAIN_PREFIX) or model == PROBE_MODEL else list(args.set)


def run_one(dataset: str, data_dir: str, model: str, seed: int, args) -> dict:
    run_dir = os.path.join(args.out, "runs", dataset, model, f"seed{seed}")
    eval_json = os.path.join(run_dir, "evaluation.json")
    if os.path.exists(eval_json):
        _check_reused_run(run_dir, model, seed, args)
        with open(eval_json) as f:
            return {"dataset": dataset, "model": model, "seed": seed, "reused": True,
                    "evaluation": json.load(f)}
    os.makedirs(run_dir, exist_ok=True)
    if model == PROBE_MODEL:  # its own schedule (30 epochs over cached features)
        commands = [("train", [
            sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "linear_probe.py"),
            "--data", data_dir, "--work-dir", os.path.join(args.out, "work", dataset),
            "--image-size", str(args.image_size), "--seed", str(seed), "--json", eval_json])]
    elif model.startswith(PLAIN_PREFIX):
        commands = [("train", [
            sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         "plain_reference.py"),
            "--data", data_dir, "--head", model[len(PLAIN_PREFIX):], "--epochs",
            str(args.epochs), "--image-size", str(args.image_size), "--seed", str(seed),
            "--json", eval_json])]
    else:
        train = sicot_command() + [
            "train", "--data", data_dir, "--model", model, "--out",
            os.path.join(run_dir, "model"), "--epochs", str(args.epochs), "--image-size",
            str(args.image_size), "--seed", str(seed),
            "--work-dir", os.path.join(args.out, "work", dataset)] + [
            a for kv in _set_options(model, args) for a in ("--set", kv)]
        evaluate = sicot_command() + ["evaluate", "--model", os.path.join(run_dir, "model"),
                                      "--data", data_dir, "--json", eval_json]
        commands = [("train", train), ("evaluate", evaluate)]
    start = time.perf_counter()
    for name, command in commands:
        with open(os.path.join(run_dir, f"{name}.log"), "w") as log:
            log.write(" ".join(command) + "\n")
            log.flush()
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            raise RuntimeError(f"{dataset}/{model}/seed{seed}: sicot {name} exited {code}; "
                               f"see {os.path.join(run_dir, name + '.log')}")
    with open(eval_json) as f:
        evaluation = json.load(f)
    return {"dataset": dataset, "model": model, "seed": seed, "reused": False,
            "seconds": round(time.perf_counter() - start, 1), "evaluation": evaluation}


def aggregate(runs: list) -> dict:
    """dataset -> model -> mode -> band -> {mean, std, min, max, n} of top-1 (percent)."""
    table = {}
    for run in runs:
        results = run["evaluation"]["results"]
        for mode in MODES:
            # Visual-only baselines have no text branch: their image + text answer is the
            # image-only one.
            bands = results.get(mode) or results[contract.IMAGE_ONLY]
            for band in BANDS:
                value = bands[band]["top1"]
                (table.setdefault(run["dataset"], {}).setdefault(run["model"], {})
                 .setdefault(mode, {}).setdefault(band, []).append(100.0 * value))
            (table[run["dataset"]][run["model"]][mode].setdefault("top5", [])
             .append(100.0 * bands[contract.OVERALL]["top5"]))
    out = {}
    for dataset, models in table.items():
        for model, modes in models.items():
            for mode, bands in modes.items():
                for band, values in bands.items():
                    out.setdefault(dataset, {}).setdefault(model, {}).setdefault(mode, {})[
                        band] = {"mean": statistics.mean(values),
                                 "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                 "min": min(values), "max": max(values), "n": len(values),
                                 "values": values}
    return out


def markdown(agg: dict, models) -> str:
    lines = []
    for dataset, by_model in agg.items():
        lines.append(f"\n**{dataset}** (top-1 %, mean +- std over seeds; few also min..max)\n")
        lines.append("| model | query | overall | top-5 | many | medium | few | few min..max |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for model in models:
            if model not in by_model:
                continue
            for mode in MODES:
                if mode == contract.IMAGE_TEXT and not model.startswith("sicot"):
                    continue
                r = by_model[model][mode]
                cells = [f"{r[b]['mean']:.1f} +- {r[b]['std']:.1f}"
                         for b in ("overall", "top5", "many", "medium", "few")]
                few = r["few"]
                label = "image only" if mode == contract.IMAGE_ONLY else "image + text"
                lines.append(f"| {model} | {label} | " + " | ".join(cells)
                             + f" | {few['min']:.1f}..{few['max']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(runs: list, models, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for model in models:
            per_class = {}
            for run in runs:
                if run["dataset"] != dataset or run["model"] != model:
                    continue
                for name, r in run["evaluation"]["per_class"][contract.IMAGE_ONLY].items():
                    per_class.setdefault(name, [r["train_count"], []])[1].append(r["top1"])
            if not per_class:
                continue
            counts = np.array([v[0] for v in per_class.values()], dtype=float)
            accuracy = np.array([np.mean(v[1]) for v in per_class.values()])
            edges = np.unique(np.round(np.geomspace(max(1, counts.min()), counts.max() + 1, 9)))
            centres, means = [], []
            for lo, hi in zip(edges[:-1], edges[1:]):
                inside = (counts >= lo) & (counts < hi)
                if inside.any():
                    centres.append(math.sqrt(lo * hi))
                    means.append(100 * accuracy[inside].mean())
            style = "-" if model.startswith("sicot") else "--"
            ax.plot(centres, means, style, marker="o", label=model,
                    color=f"C{list(models).index(model) % 10}")
        ax.set_xscale("log")
        ax.set_xlabel("training images of the class (log scale)")
        ax.set_ylabel("image-only top-1 (%), mean over classes in bin and seeds")
        ax.set_title(f"per-class accuracy vs training count: {dataset}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20,
                        help="stage-1 epochs for every model (cRT stage 2 adds crt_epochs)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every sicot train (a field all presets have)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at the same time")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: aggregate the runs that have an evaluation.json")
    args = parser.parse_args(argv)
    datasets = dict(d.split("=", 1) for d in args.dataset)
    os.makedirs(args.out, exist_ok=True)
    # The first run of each dataset imports and transforms into the shared work dir; run
    # those alone so that two runs never write the same work dir.
    jobs = [(d, datasets[d], m, s) for d in datasets for s in args.seeds for m in args.models]
    if args.report_only:
        jobs = [j for j in jobs if os.path.exists(os.path.join(
            args.out, "runs", j[0], j[2], f"seed{j[3]}", "evaluation.json"))]
    firsts = [next(j for j in jobs if j[0] == d and not j[2].startswith(PLAIN_PREFIX))
              for d in datasets if any(j[0] == d and not j[2].startswith(PLAIN_PREFIX)
                                       for j in jobs)]
    runs = [run_one(*j, args) for j in firsts]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, *j, args) for j in jobs if j not in firsts]
        for future in concurrent.futures.as_completed(futures):
            run = future.result()
            runs.append(run)
            overall = run["evaluation"]["results"]["image_only"]
            print(f"{run['dataset']}/{run['model']}/seed{run['seed']}: image-only top-1 "
                  f"{100 * overall['overall']['top1']:.1f}, few {100 * overall['few']['top1']:.1f}"
                  f" ({run.get('seconds', 'reused')} s)", file=sys.stderr, flush=True)
    agg = aggregate(runs)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"settings": vars(args), "aggregate": agg,
                   "runs": [{k: v for k, v in r.items() if k != "evaluation"}
                            | {"results": r["evaluation"]["results"]} for r in runs]},
                  f, indent=2)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(markdown(agg, args.models))
    plot(runs, args.models, os.path.join(args.out, "per_class.png"))
    print(json.dumps({d: {m: {mode: {b: round(v["mean"], 1) for b, v in r.items()}
                              for mode, r in modes.items()} for m, modes in ms.items()}
                      for d, ms in agg.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
