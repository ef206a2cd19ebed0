"""The linear-probe floor of a pretrained tower (issue 23): one linear layer on the frozen
ImageNet EfficientNet-Lite0 features, the number every preset on that tower must clear.

    .venv/bin/python bench/linear_probe.py --data DIR --work-dir WORK --seed 0 \\
        --json OUT/evaluation.json [--epochs 30] [--image-size 96]

The images go through the same import and Transform as `sicot train` (`--work-dir` shared with
the presets' runs: `prepare_examples` reuses the transformed examples, and the features land in
WORK/feature_cache, the cache `sicot train` reads, so the probe and every frozen-tower preset
see the very same features). Then: a Dense(C) on the 1,280 pooled features, softmax
cross-entropy, Adam with cosine decay, `--epochs` over the training split (seconds). At test,
logits - tau log prior (logit adjustment after the fact, Menon et al. 2021; tau = 1, the
`logit_adjusted` row) and plain argmax (the `argmax` row, in `extra`). Image-only top-1 / top-5
on the test split, overall and by class band (as the model's Transform assigns them: training
images per class, `contract.band_of_count` with the Transform's edges), written in the layout
of `sicot evaluate --json`, so `bench/long_tail_report.py` tables it (`--models probe_linear`).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np

from sicot import contract


def tallies(logits, labels, class_names, counts, band_edges):
    """({band: {count, top1, top5}}, per-class) of test logits [N, C] against label ids. A
    label outside the trained classes (a new SKU's photo) is a miss in the few band, as
    `sicot evaluate` and bench/plain_reference.py count it."""
    top5 = np.argsort(-logits, axis=1)[:, :5]
    bands = collections.defaultdict(lambda: [0, 0, 0])
    per_class = collections.defaultdict(lambda: [0, 0, 0])
    for y, predicted in zip(labels, top5):
        hit1, hit5 = int(predicted[0] == y), int(y in predicted)
        known = 0 <= y < len(class_names)
        name = class_names[y] if known else "(untrained)"
        band = contract.band_of_count(counts[y] if known else 0, band_edges)
        for key in (contract.OVERALL, band):
            bands[key] = [bands[key][0] + 1, bands[key][1] + hit1, bands[key][2] + hit5]
        per_class[name] = [per_class[name][0] + 1, per_class[name][1] + hit1,
                           per_class[name][2] + hit5]

    def as_dict(t):
        n, h1, h5 = t
        return {"count": n, "top1": h1 / n if n else None, "top5": h5 / n if n else None}

    return ({b: as_dict(bands[b]) for b in (contract.OVERALL,) + contract.BANDS},
            {c: dict(as_dict(t), train_count=int(counts[class_names.index(c)])
                     if c in class_names else 0)
             for c, t in sorted(per_class.items())})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (train.jsonl, test.jsonl)")
    p.add_argument("--work-dir", required=True,
                   help="import + Transform + feature cache folder (share it with the runs)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True, help="write the evaluation here")
    args = p.parse_args(argv)

    import keras
    import tensorflow_transform as tft

    from sicot.trainer import cached_features
    from sicot.trainer.cli import prepare_examples
    from sicot.trainer.backbones.imagenet_weights import load_imagenet_weights
    from sicot.trainer.transform.preprocessing import TransformConfig
    from sicot.trainer.transform.output import read_class_counts
    from sicot.trainer.model.visual_tower import VisualTower

    start = time.perf_counter()
    transform_config = TransformConfig(image_size=args.image_size)
    result = prepare_examples(args.data, args.work_dir, transform_config)
    tft_output = tft.TFTransformOutput(result.transform_output_dir)
    class_names, counts = read_class_counts(tft_output)
    counts = np.asarray(counts, dtype="float64")
    tower = VisualTower("efficientnet_lite0", embedding_dim=8)
    tower.build((None, args.image_size, args.image_size, 3))
    load_imagenet_weights(tower.efficientnet)
    cache_dir = os.path.join(args.work_dir, "feature_cache")
    train = cached_features.extract(tower, result.transformed_files["train"], tft_output,
                                    image_size=args.image_size, cache_dir=cache_dir)
    test = cached_features.extract(tower, result.transformed_files["test"], tft_output,
                                   image_size=args.image_size, cache_dir=cache_dir)
    feature_seconds = time.perf_counter() - start
    known = (test.labels >= 0) & (test.labels < len(class_names))

    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input((train.features.shape[1],))
    model = keras.Model(inputs, keras.layers.Dense(len(class_names))(inputs))
    steps = args.epochs * int(np.ceil(len(train) / args.batch_size))
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        args.learning_rate, steps, alpha=0.01)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(train.features, train.labels, batch_size=args.batch_size, epochs=args.epochs,
              shuffle=True, verbose=0)
    train_seconds = time.perf_counter() - start

    logits = model.predict(test.features, batch_size=1024, verbose=0)
    log_prior = np.log(np.maximum(counts, 1) / counts.sum())
    band_edges = transform_config.band_edges
    adjusted, per_class = tallies(logits - args.tau * log_prior, test.labels,
                                  class_names, counts, band_edges)
    plain, _ = tallies(logits, test.labels, class_names, counts, band_edges)
    trained_only, _ = tallies(logits[known] - args.tau * log_prior, test.labels[known],
                              class_names, counts, band_edges)
    report = {"model": "probe_linear", "settings": vars(args),
              "records": int(len(test)), "unknown_test_labels": int((~known).sum()),
              "load_seconds": feature_seconds, "train_seconds": train_seconds,
              "epoch_seconds": train_seconds / max(1, args.epochs),
              "results": {contract.IMAGE_ONLY: adjusted},
              "extra": {"argmax": plain, "trained_classes_only": trained_only},
              "per_class": {contract.IMAGE_ONLY: per_class}}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    r, a = adjusted, plain
    print(f"probe_linear: image-only top-1 overall {100 * r['overall']['top1']:.1f} few "
          f"{100 * (r['few']['top1'] or 0):.1f} (argmax {100 * a['overall']['top1']:.1f} / "
          f"{100 * (a['few']['top1'] or 0):.1f}); {train_seconds:.1f} s for {args.epochs} "
          f"epochs over {len(train):,} cached features")
    return 0


if __name__ == "__main__":
    sys.exit(main())
