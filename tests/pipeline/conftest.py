"""Tiny datasets for the pipeline tests (a few classes, 32 px images, fast on 2 cores)."""
import io
import json
import os
import types
import zlib

import numpy as np
import pytest

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 210, 20), (200, 40, 200),
           (20, 200, 210), (250, 140, 10), (120, 120, 120), (90, 40, 10), (250, 250, 250)]


def image_bytes(class_index: int, seed: int, size: int = 32, fmt: str = "JPEG",
                colour=None) -> bytes:
    """A small product-like picture: a coloured square (class colour, or `colour`) on noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    lo, hi = size // 4, 3 * size // 4
    pixels[lo:hi, lo:hi] = colour if colour is not None else COLOURS[class_index % len(COLOURS)]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def class_counts(num_classes: int, n_max: int, n_min: int):
    """Long-tailed per-class training counts from n_max down to n_min."""
    ratio = n_max / n_min
    return [max(n_min, round(n_max * ratio ** (-i / max(1, num_classes - 1))))
            for i in range(num_classes)]


def write_manifest_dataset(root, train_counts, per_class_test=2, per_class_eval=1,
                           bad_rows=None):
    """A dataset folder: train/eval/test.jsonl + images/. bad_rows: split -> list of raw lines."""
    root = str(root)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    counts = {"train": list(train_counts),
              "eval": [per_class_eval] * len(train_counts),
              "test": [per_class_test] * len(train_counts)}
    for split, per_class in counts.items():
        lines = []
        for c, n in enumerate(per_class):
            for i in range(n):
                name = f"images/{split}_{c}_{i}.jpg"
                with open(os.path.join(root, name), "wb") as f:
                    f.write(image_bytes(c, seed=zlib.crc32(f"{split}/{c}/{i}".encode())))
                lines.append(json.dumps({
                    "image": name, "title": f"colour{c} box item {i % 3}",
                    "tags": [f"tag{c % 3}", "sale"], "label": f"class-{c:02d}"}))
        lines += list((bad_rows or {}).get(split, []))
        with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return root


def write_tfrecord_dataset(root, train_counts, per_class_test=2, drop_label_in=()):
    """Imported TFRecords `<split>-00000-of-00001.tfrecord.gz`; `label` left out in the
    splits named in drop_label_in."""
    import tensorflow as tf

    root = str(root)
    os.makedirs(root, exist_ok=True)
    counts = {"train": list(train_counts), "test": [per_class_test] * len(train_counts)}
    for split, per_class in counts.items():
        path = os.path.join(root, f"{split}-00000-of-00001.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as w:
            for c, n in enumerate(per_class):
                for i in range(n):
                    feats = {
                        "image": image_bytes(c, seed=c * 1000 + i),
                        "title": f"colour{c} box".encode(),
                        "tags": b"sale",
                        "record_id": f"{split}.jsonl:{c * 100 + i}".encode(),
                    }
                    if split not in drop_label_in:
                        feats["label"] = f"class-{c:02d}".encode()
                    ex = tf.train.Example(features=tf.train.Features(feature={
                        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
                        for k, v in feats.items()}))
                    w.write(ex.SerializeToString())
    return root


@pytest.fixture
def datasets():
    """The dataset writers above (importlib import mode: tests cannot import conftest)."""
    return types.SimpleNamespace(
        image_bytes=image_bytes, class_counts=class_counts,
        write_manifest_dataset=write_manifest_dataset,
        write_tfrecord_dataset=write_tfrecord_dataset)
