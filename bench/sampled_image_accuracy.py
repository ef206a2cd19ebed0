"""Sampled vs dense classifier on images: collects `sicot train` + `sicot evaluate` runs as JSON.

    .venv/bin/python bench/sampled_image_accuracy.py dense=/tmp/s10k/dense \\
        sampled=/tmp/s10k/sampled sampled_lr05=/tmp/s10k/sampled_lr05

Each NAME=DIR is a `sicot train --out` folder holding `train_report.json` and the
`sicot evaluate --image-only --json DIR/test_eval.json` report (the commands are in
docs/benchmarks.md, Scale section). Prints per run: the head settings, examples, steps, wall
times (training, seconds per epoch, seconds per step from them; epochs include the validation
pass over the eval split), image-only top-1 / top-5 on the test split, and the differences to
the first run in points.
"""
from __future__ import annotations

import json
import os
import statistics
import sys

from sicot import contract


def summarise(name, run_dir):
    with open(os.path.join(run_dir, "train_report.json")) as f:
        train = json.load(f)
    with open(os.path.join(run_dir, "test_eval.json")) as f:
        evaluation = json.load(f)
    config, steps = train["config"], train["steps_per_epoch"]
    overall = evaluation["results"][contract.IMAGE_ONLY][contract.OVERALL]
    epoch_seconds = train.get("epoch_seconds", [])
    return {
        "name": name,
        "dir": run_dir,
        "sampled_classifier_min_classes": config["sampled_classifier_min_classes"],
        "centre_learning_rate": config["centre_learning_rate"],
        "negative_share": config["negative_share"],
        "examples": train["examples"],
        "epochs": config["epochs"],
        "steps_per_epoch": steps,
        "train_seconds": round(train["train_seconds"], 1),
        "epoch_seconds": [round(s, 1) for s in epoch_seconds],
        "median_seconds_per_step": (round(statistics.median(epoch_seconds) / steps, 4)
                                    if epoch_seconds else None),
        "test_records": overall["count"],
        "top1": overall["top1"],
        "top5": overall["top5"],
    }


def main(argv):
    runs = []
    for arg in argv:
        name, sep, run_dir = arg.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=DIR, got {arg!r}")
        runs.append(summarise(name, run_dir))
    if not runs:
        raise SystemExit(__doc__)
    base = runs[0]
    for run in runs[1:]:
        run["top1_minus_first_points"] = round(100 * (run["top1"] - base["top1"]), 2)
        run["top5_minus_first_points"] = round(100 * (run["top5"] - base["top5"]), 2)
    print(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
