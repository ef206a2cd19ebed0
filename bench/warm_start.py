"""Warm start against training from scratch on day-2 data (issue 15), one run, side by side.

    nice -n 5 flock /work/locks/bench.lock .venv/bin/python bench/warm_start.py \\
        --data /tmp/synth --out /tmp/warm_start_bench [--epochs 20] [--warm-epochs 4]

From one dataset (default: `sicot synth`'s) it makes two days: a share of the classes
(`--new-fraction`, drawn at random) are new SKUs that only exist on day 2; the other classes'
training images are split at random between day 1 and day 2. Day 2's training data is the
rolling window of both days (what the pipeline's `--rolling-spans 2` reads); the test split
is the dataset's whole test split (every class). Then, all through the `sicot` command:

  1. `sicot train` on day 1 (`--epochs`): yesterday's model;
  2. `sicot train` on the day-2 window from scratch (`--epochs`, the converged schedule);
  3. `sicot train` on the day-2 window warm-started from 1 (`--warm-epochs`);
  4. with `--short-scratch`: `sicot train` on the day-2 window from scratch for `--warm-epochs`
     (the control at the warm run's cost: does the warm start itself help?);
  5. `sicot evaluate --image-only` of 2, 3 (and 4) on the test split.

Runs 2 and 3 share one import + Transform (`--work-dir`), so their wall times are training
(and export) only; both include the preset's cRT stage 2. Writes OUT/results.json and prints
it. A run whose train_report.json exists is reused.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

BANDS = ("overall", "many", "medium", "few")


def _sicot():
    return os.path.join(os.path.dirname(sys.executable), "sicot")


def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_dataset(folder, source, splits):
    """splits: name -> records; images copied (the path rule keeps them inside the folder)."""
    os.makedirs(folder, exist_ok=True)
    for name, records in splits.items():
        for record in records:
            target = os.path.join(folder, record["image"])
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(os.path.join(source, record["image"]), target)
        with open(os.path.join(folder, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def make_days(data, out, new_fraction, seed):
    """Writes OUT/day1 and OUT/window (day 1 + day 2); returns the new SKUs."""
    rng = random.Random(seed)
    train = _read_jsonl(os.path.join(data, "train.jsonl"))
    test = _read_jsonl(os.path.join(data, "test.jsonl"))
    evals = (_read_jsonl(os.path.join(data, "eval.jsonl"))
             if os.path.exists(os.path.join(data, "eval.jsonl")) else [])
    classes = sorted({r["label"] for r in train})
    new = set(rng.sample(classes, max(1, round(new_fraction * len(classes)))))
    day1_train = [r for r in train if r["label"] not in new and rng.random() < 0.5]
    day1 = {"train": day1_train,
            "test": [r for r in test if r["label"] not in new],
            "eval": [r for r in evals if r["label"] not in new]}
    # A class whose every image fell on day 2 still exists on day 1 with one image.
    on_day1 = {r["label"] for r in day1_train}
    for label in sorted(set(classes) - new - on_day1):
        day1["train"].append(next(r for r in train if r["label"] == label))
    if not os.path.exists(os.path.join(out, "day1", "train.jsonl")):
        _write_dataset(os.path.join(out, "day1"), data, {k: v for k, v in day1.items() if v})
        _write_dataset(os.path.join(out, "window"), data,
                       {k: v for k, v in {"train": train, "test": test, "eval": evals}.items()
                        if v})
    return sorted(new), len(day1["train"]), len(train)


def _run(command, log):
    start = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(command, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def train(name, data, out, args, extra=()):
    folder = os.path.join(out, name)
    report = os.path.join(folder, "train_report.json")
    if not os.path.exists(report):
        command = [_sicot(), "train", "--data", data, "--model", args.model, "--out", folder,
                   "--image-size", str(args.image_size), "--seed", str(args.seed), *extra]
        _run(command, os.path.join(out, f"{name}.train.log"))
    with open(report) as f:
        return json.load(f)


def evaluate(name, data, out):
    path = os.path.join(out, name, "evaluation.json")
    if not os.path.exists(path):
        _run([_sicot(), "evaluate", "--model", os.path.join(out, name), "--data", data,
              "--image-only", "--json", path], os.path.join(out, f"{name}.evaluate.log"))
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset folder (train/test[/eval].jsonl)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="sicot")
    p.add_argument("--epochs", type=int, default=20, help="day-1 and from-scratch epochs")
    p.add_argument("--warm-epochs", type=int, default=4, help="warm-started epochs")
    p.add_argument("--new-fraction", type=float, default=0.1, help="share of new SKUs")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a ModelConfig change for the warm run only, e.g. learning_rate=5e-4 "
                        "(repeatable; use a new --out with the other runs linked in: a run "
                        "whose folder exists is reused whatever its settings)")
    p.add_argument("--short-scratch", action="store_true",
                   help="also train from scratch for --warm-epochs (same cost as the warm run)")
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    new, day1_images, window_images = make_days(args.data, out, args.new_fraction, args.seed)
    day1, window = os.path.join(out, "day1"), os.path.join(out, "window")
    work = ["--work-dir", os.path.join(out, "work-window")]
    reports = {
        "day1": train("day1", day1, out, args, ["--epochs", str(args.epochs)]),
        "scratch": train("scratch", window, out, args, ["--epochs", str(args.epochs), *work]),
        "warm": train("warm", window, out, args,
                      ["--epochs", str(args.warm_epochs), "--base-model",
                       os.path.join(out, "day1"), *work,
                       *(a for kv in args.warm_set for a in ("--set", kv))]),
    }
    if args.short_scratch:
        reports["scratch_short"] = train("scratch_short", window, out, args,
                                         ["--epochs", str(args.warm_epochs), *work])
    results = {"settings": vars(args), "new_skus": new, "day1_train_images": day1_images,
               "window_train_images": window_images, "runs": {}}
    for name in reports:
        if name == "day1":
            continue
        evaluation = evaluate(name, window, out)
        per_class = evaluation["per_class"]["image_only"]
        hits = [per_class[c]["top1"] * per_class[c]["count"] for c in new if c in per_class]
        count = sum(per_class[c]["count"] for c in new if c in per_class)
        results["runs"][name] = {
            "epochs": reports[name]["config"]["epochs"],
            "crt_epochs": reports[name]["config"]["crt_epochs"],
            "train_seconds": reports[name]["train_seconds"],
            "image_only_top1": {b: evaluation["results"]["image_only"][b]["top1"]
                                for b in BANDS},
            "new_sku_top1": sum(hits) / count if count else None,
            "warm_start": reports[name].get("warm_start"),
        }
    scratch, warm = results["runs"]["scratch"], results["runs"]["warm"]
    results["warm_over_scratch_time"] = warm["train_seconds"] / scratch["train_seconds"]
    results["warm_minus_scratch_top1_points"] = {
        b: 100 * (warm["image_only_top1"][b] - scratch["image_only_top1"][b]) for b in BANDS}
    if "scratch_short" in results["runs"]:
        short = results["runs"]["scratch_short"]
        results["warm_minus_short_scratch_top1_points"] = {
            b: 100 * (warm["image_only_top1"][b] - short["image_only_top1"][b]) for b in BANDS}
    results["day1_train_seconds"] = reports["day1"]["train_seconds"]
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
