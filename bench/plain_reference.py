"""The plain reference: the simplest honest long-tail trainer a user could write in an
afternoon, run beside our trainer on the same data (issue 12).

    .venv/bin/python bench/plain_reference.py --data DIR --head cosine --epochs 20 \\
        --image-size 32 --seed 0 --json OUT/evaluation.json

No TFX, no Transform, no tf.data: PIL decodes every image once into a uint8 array (RGB,
aspect kept, padded to a square, bilinear), six 3x3 conv layers (BN, ReLU, two max-pools,
global average pooling), one head, `model.fit(x, y, shuffle=True)` on the arrays, random
flip + translation as the only augmentation, AdamW with cosine decay. Heads:
  ce            linear head, plain cross-entropy
  logit_adjust  linear head, logit-adjusted cross-entropy (Menon et al. 2021, tau = 1)
  cosine        cosine head (scale 16), logit-adjusted cross-entropy
Image-only top-1 / top-5 on the test split, overall and by class band (training images per
class, `sicot.contract.band_of_count`), written in the layout of `sicot evaluate --json`
so `bench/long_tail_report.py` tables it beside our presets (`--models plain_cosine ...`).
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

HEADS = ("ce", "logit_adjust", "cosine")


def load_split(data_dir: str, split: str, size: int):
    """(uint8 images [N, S, S, 3], label names) of a manifest split, decoded with PIL."""
    from PIL import Image

    images, labels = [], []
    with open(os.path.join(data_dir, f"{split}.jsonl"), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            with Image.open(os.path.join(data_dir, record["image"])) as im:
                im = im.convert("RGB")
                scale = size / max(im.size)
                w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
                canvas = Image.new("RGB", (size, size))
                canvas.paste(im.resize((w, h), Image.BILINEAR), ((size - w) // 2, (size - h) // 2))
            images.append(np.asarray(canvas, dtype=np.uint8))
            labels.append(str(record["label"]))
    return np.stack(images), labels


def build_model(num_classes: int, size: int, head: str, log_prior: np.ndarray,
                stem_stride: int = 1):
    import keras
    from keras import layers, ops

    def conv(x, width, strides=1):
        x = layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    inputs = keras.Input((size, size, 3))
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.RandomTranslation(0.125, 0.125, fill_mode="reflect")(x)
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    for i, width in enumerate((32, 64, 128)):
        x = conv(conv(x, width, strides=stem_stride if i == 0 else 1), width)
        if i < 2:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    if head == "cosine":
        x = layers.UnitNormalization()(x)
        logits = layers.Dense(num_classes, use_bias=False,
                              kernel_constraint=keras.constraints.UnitNorm(axis=0))(x)
        logits = layers.Rescaling(16.0)(logits)
    else:
        logits = layers.Dense(num_classes)(x)
    model = keras.Model(inputs, logits)
    prior = ops.convert_to_tensor(log_prior if head != "ce" else np.zeros_like(log_prior))

    def loss(y_true, y_pred):  # logit adjustment: train on logits + tau log prior
        return keras.losses.sparse_categorical_crossentropy(
            y_true, y_pred + prior, from_logits=True)

    return model, loss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (train.jsonl, test.jsonl)")
    p.add_argument("--head", choices=HEADS, default="cosine")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stem-stride", type=int, default=1,
                   help="stride of the first conv (2 = the resolution of sicot's small tower)")
    p.add_argument("--json", required=True, help="write the evaluation here")
    args = p.parse_args(argv)

    import keras

    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    x_train, train_names = load_split(args.data, "train", args.image_size)
    x_test, test_names = load_split(args.data, "test", args.image_size)
    counts = collections.Counter(train_names)
    classes = sorted(counts, key=lambda c: (-counts[c], c))
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[c] for c in train_names])
    known = np.array([c in index for c in test_names])
    y_test = np.array([index.get(c, -1) for c in test_names])
    load_seconds = time.perf_counter() - start

    train_counts = np.array([counts[c] for c in classes], dtype="float64")
    model, loss = build_model(len(classes), args.image_size, args.head,
                              np.log(train_counts / train_counts.sum()).astype("float32"),
                              stem_stride=args.stem_stride)
    steps = args.epochs * int(np.ceil(len(y_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps, alpha=0.01)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss)
    start = time.perf_counter()
    model.fit(x_train.astype("float32"), y_train, batch_size=args.batch_size,
              epochs=args.epochs, shuffle=True, verbose=2)
    train_seconds = time.perf_counter() - start

    logits = model.predict(x_test.astype("float32"), batch_size=256, verbose=0)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    tallies = collections.defaultdict(lambda: [0, 0, 0])
    per_class = collections.defaultdict(lambda: [0, 0, 0])
    for name, y, predicted in zip(test_names, y_test, top5):
        hit1, hit5 = int(predicted[0] == y), int(y in predicted)
        for key in (contract.OVERALL, contract.band_of_count(counts.get(name, 0))):
            tallies[key] = [tallies[key][0] + 1, tallies[key][1] + hit1, tallies[key][2] + hit5]
        per_class[name] = [per_class[name][0] + 1, per_class[name][1] + hit1,
                           per_class[name][2] + hit5]

    def as_dict(t):
        n, h1, h5 = t
        return {"count": n, "top1": h1 / n if n else None, "top5": h5 / n if n else None}

    report = {"model": f"plain_{args.head}", "settings": vars(args),
              "records": len(test_names), "unknown_test_labels": int((~known).sum()),
              "load_seconds": load_seconds, "train_seconds": train_seconds,
              "results": {contract.IMAGE_ONLY: {b: as_dict(tallies[b])
                                                for b in (contract.OVERALL,) + contract.BANDS}},
              "per_class": {contract.IMAGE_ONLY: {
                  c: dict(as_dict(t), train_count=counts.get(c, 0))
                  for c, t in sorted(per_class.items())}}}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    r = report["results"][contract.IMAGE_ONLY]
    print(f"plain_{args.head}: image-only top-1 overall {100 * r['overall']['top1']:.1f} "
          f"few {100 * (r['few']['top1'] or 0):.1f} ({train_seconds:.0f} s training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
