"""Training step time and peak memory of the classifier vs the number of classes (CPU).

    .venv/bin/python bench/classifier_scaling.py                       # 1K..1M, all modes
    .venv/bin/python bench/classifier_scaling.py --classes 1000 10000 --modes dense sampled

Each (classes, mode) runs in a fresh subprocess, so its peak RSS is its own. A step is one
`model.fit` batch of a tiny trunk (Dense 64 -> 64) and the classifier, on random features
[batch, 64] and uniform random labels; the loss is the project's long-tail cross-entropy
(logit adjustment with a long-tailed prior). Modes:
  dense           ClassifierHead (full [B, C] softmax) + AdamW          (the default trainer)
  sampled_adamw   SampledClassifierHead (Partial FC sample) + plain AdamW: the centre gradient
                  is IndexedSlices, but AdamW keeps [C, D] slots and updates them densely
  sampled_sgd     SampledClassifierHead + plain keras SGD (no momentum): does Keras 3 apply
                  IndexedSlices sparsely on its own?
  sampled         SampledClassifierHead + SparseCentreAdamW (row-sparse centre update, no
                  centre optimizer state)
Prints one JSON object: per configuration the median step seconds, steps/s, peak RSS
(resource.getrusage ru_maxrss of the subprocess) and RSS after building the model
(psutil), and the ratios dense / sampled side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("dense", "sampled_adamw", "sampled_sgd", "sampled")


def run_one(num_classes: int, mode: str, dim: int, batch: int, share: float, min_steps: int,
            max_steps: int, budget_s: float) -> dict:
    import resource

    import keras
    import numpy as np
    import psutil
    from keras import ops

    from sicot.trainer.model import losses as long_tail_losses
    from sicot.trainer.model.classifier_head import ClassifierHead
    from sicot.trainer.model.sampled_classifier_head import SampledClassifierHead
    from sicot.trainer.sparse_centre_adamw import SparseCentreAdamW

    keras.utils.set_random_seed(0)
    counts = np.maximum(1, np.round(500 * 100.0 ** (-np.arange(num_classes) / num_classes)))
    log_prior = long_tail_losses.log_class_prior(counts)
    sampled = mode != "dense"

    class Bench(keras.Model):
        def __init__(self):
            super().__init__()
            self.trunk = keras.layers.Dense(dim, activation="relu", name="trunk")
            if sampled:
                self.visual_head = SampledClassifierHead(num_classes, share, seed=0,
                                                         name="visual_head")
            else:
                self.visual_head = ClassifierHead(num_classes, name="visual_head")

        def call(self, x, training=False):
            features = self.trunk(x)
            if training and sampled:
                return {"features": features}
            return {"features": features, "logits": self.visual_head(features)}

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            if sampled:
                ids, y_k = self.visual_head.sample_classes(y)
                logits = self.visual_head.sampled_logits(y_pred["features"], ids)
                prior = ops.take(log_prior, ids)
                return ops.mean(long_tail_losses.long_tail_cross_entropy(
                    y_k, logits, prior, "logit_adjust", 1.0))
            return ops.mean(long_tail_losses.long_tail_cross_entropy(
                y, y_pred["logits"], log_prior, "logit_adjust", 1.0))

    model = Bench()
    model(np.zeros((1, dim), "float32"))
    if mode == "sampled":
        optimizer = SparseCentreAdamW(centre_learning_rate=0.1, learning_rate=1e-3,
                                      weight_decay=1e-4)
    elif mode == "sampled_sgd":
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
    else:
        optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-4)
    model.compile(optimizer=optimizer)
    rss_built = psutil.Process().memory_info().rss

    rng = np.random.RandomState(0)
    x = rng.randn(batch * 4, dim).astype("float32")
    y = rng.randint(0, num_classes, batch * 4).astype("int32")
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch_index, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch_index, logs=None):
            times.append(time.perf_counter() - self.start)
            if len(times) >= min_steps + 1 and (sum(times[1:]) > budget_s
                                                or len(times) >= max_steps + 1):
                self.model.stop_training = True

    model.fit(ds, epochs=1, steps_per_epoch=max_steps + 1, verbose=0, callbacks=[Timer()])
    timed = times[1:]  # the first step traces the function
    step = statistics.median(timed)
    optimizer_floats = sum(int(np.prod(v.shape)) for v in optimizer.variables)
    return {"classes": num_classes, "mode": mode, "dim": dim, "batch": batch,
            "negative_share": share if sampled else None, "timed_steps": len(timed),
            "first_step_s": round(times[0], 3), "median_step_s": round(step, 4),
            "steps_per_s": round(1.0 / step, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_build_mib": round(rss_built / 2 ** 20, 1),
            "optimizer_state_mib": round(optimizer_floats * 4 / 2 ** 20, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, nargs="+",
                        default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--negative-share", type=float, default=0.1)
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--budget-s", type=float, default=8.0,
                        help="stop timing a configuration after this many seconds of steps")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # child process: one configuration
        print(json.dumps(run_one(args.classes[0], args.modes[0], args.dim, args.batch,
                                 args.negative_share, args.min_steps, args.max_steps,
                                 args.budget_s)))
        return 0
    results = []
    for classes in args.classes:
        for mode in args.modes:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", "--classes", str(classes),
                   "--modes", mode, "--dim", str(args.dim), "--batch", str(args.batch),
                   "--negative-share", str(args.negative_share), "--min-steps",
                   str(args.min_steps), "--max-steps", str(args.max_steps),
                   "--budget-s", str(args.budget_s)]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            if proc.returncode != 0:
                results.append({"classes": classes, "mode": mode,
                                "error": proc.stderr.strip().splitlines()[-1:]})
            else:
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    by_key = {(r["classes"], r["mode"]): r for r in results if "error" not in r}
    ratios = []
    for classes in args.classes:
        dense, fast = by_key.get((classes, "dense")), by_key.get((classes, "sampled"))
        if dense and fast:
            ratios.append({"classes": classes,
                           "dense_step_s": dense["median_step_s"],
                           "sampled_step_s": fast["median_step_s"],
                           "step_time_dense_over_sampled": round(
                               dense["median_step_s"] / fast["median_step_s"], 2),
                           "dense_peak_rss_mib": dense["peak_rss_mib"],
                           "sampled_peak_rss_mib": fast["peak_rss_mib"],
                           "peak_rss_dense_over_sampled": round(
                               dense["peak_rss_mib"] / fast["peak_rss_mib"], 2)})
    print(json.dumps({"cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
                      "results": results, "dense_vs_sampled": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
