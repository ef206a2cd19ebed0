"""Accuracy of the sampled (Partial FC) classifier against the dense softmax, same data and steps.

    .venv/bin/python bench/sampled_accuracy.py --classes 10000 --epochs 4

The question is whether training on all positives + a 10% sample of the classes loses
accuracy, so the classifier is isolated from the image tower: a long-tailed Gaussian-mixture
feature dataset (class c has a random centre in R^64; training counts fall exponentially
from --max-per-class to --max-per-class / --imbalance; --test-per-class test points per
class, balanced as in long-tailed benchmarks), a trunk (Dense 128 relu -> Dense 64) and the
head, trained with the project's logit-adjusted loss (tau = 1, prior from the training
counts). Modes (same seed, data, batch and epochs):
  dense          ClassifierHead + AdamW (full softmax every step)
  sampled_adamw  SampledClassifierHead + AdamW (only the sampling differs from dense)
  sampled        SampledClassifierHead + SparseCentreAdamW (row-sparse SGD for the centres)
Prints JSON: top-1 test accuracy overall and by band (many > 100 >= medium >= 20 > few, by
training count, scaled as --band-edges), training seconds; and differences to dense in points.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from sicot import contract

MODES = ("dense", "sampled_adamw", "sampled")


def make_data(num_classes, dim, max_per_class, imbalance, test_per_class, noise, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, dim)).astype("float32")
    counts = np.maximum(1, np.round(
        max_per_class * imbalance ** (-np.arange(num_classes) / max(1, num_classes - 1))
    )).astype(int)
    y_train = np.repeat(np.arange(num_classes), counts)
    y_test = np.repeat(np.arange(num_classes), test_per_class)

    def points(y):
        return centres[y] + noise * rng.standard_normal((len(y), dim)).astype("float32")

    x_train, x_test = points(y_train), points(y_test)
    order = rng.permutation(len(y_train))
    return x_train[order], y_train[order].astype("int32"), x_test, y_test.astype("int32"), counts


def train_one(mode, data, args):
    import keras
    import numpy as np
    from keras import ops

    from sicot.trainer.model import losses as long_tail_losses
    from sicot.trainer.model.classifier_head import ClassifierHead
    from sicot.trainer.model.sampled_classifier_head import SampledClassifierHead
    from sicot.trainer.sparse_centre_adamw import SparseCentreAdamW

    x_train, y_train, x_test, y_test, counts = data
    num_classes = len(counts)
    log_prior = long_tail_losses.log_class_prior(counts)
    sampled = mode != "dense"
    keras.utils.set_random_seed(args.seed)

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(128, activation="relu")
            self.embed = keras.layers.Dense(64)
            head_cls = SampledClassifierHead if sampled else ClassifierHead
            extra = dict(negative_share=args.negative_share, seed=args.seed) if sampled else {}
            self.visual_head = head_cls(num_classes, name="visual_head", **extra)

        def call(self, x, training=False):
            features = self.embed(self.hidden(x))
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

    model = Classifier()
    model(x_train[:1])
    steps = args.epochs * int(np.ceil(len(y_train) / args.batch))
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps, alpha=0.01)
    if mode == "sampled":
        optimizer = SparseCentreAdamW(centre_learning_rate=args.centre_learning_rate,
                                      centre_momentum=args.centre_momentum,
                                      learning_rate=schedule, weight_decay=1e-4)
    else:
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4)
    model.compile(optimizer=optimizer)
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch, epochs=args.epochs, verbose=0,
              shuffle=True)
    train_s = time.perf_counter() - start
    logits = np.concatenate([np.asarray(model(x_test[i:i + 4096])["logits"])
                             for i in range(0, len(x_test), 4096)])
    correct = np.argmax(logits, -1) == y_test
    class_band = np.array([contract.band_of_count(int(c), args.band_edges) for c in counts])
    bands = {b: class_band[y_test] == b for b in contract.BANDS}
    return {"mode": mode, "top1": round(100 * float(correct.mean()), 2),
            "by_band": {b: round(100 * float(correct[m].mean()), 2) if m.any() else None
                        for b, m in bands.items()},
            "train_seconds": round(train_s, 1), "steps": steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-per-class", type=int, default=40)
    parser.add_argument("--imbalance", type=float, default=20.0)
    parser.add_argument("--test-per-class", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--centre-learning-rate", type=float, default=1.0)
    parser.add_argument("--centre-momentum", type=float, default=0.9)
    parser.add_argument("--negative-share", type=float, default=0.1)
    parser.add_argument("--band-edges", type=int, nargs=2, default=[5, 20],
                        help="few < LOW <= medium <= HIGH < many training points")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = make_data(args.classes, args.dim, args.max_per_class, args.imbalance,
                     args.test_per_class, args.noise, args.seed)
    results = []
    for mode in args.modes:
        results.append(train_one(mode, data, args))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    dense = next((r for r in results if r["mode"] == "dense"), None)
    diffs = {r["mode"]: round(r["top1"] - dense["top1"], 2)
             for r in results if dense and r is not dense}
    print(json.dumps({"settings": vars(args), "train_points": int(len(data[1])),
                      "test_points": int(len(data[3])), "cpu_count": os.cpu_count(),
                      "load_avg_at_end": os.getloadavg(), "results": results,
                      "top1_minus_dense_points": diffs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
