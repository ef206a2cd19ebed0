"""A tiny long-tailed raw dataset + its real Transform output, shared by trainer/export tests.

Loaded by path (tests run with --import-mode=importlib): see `load()` in the test files.
Class k has a distinct colour (visual signal) and the word `word<k>` in its title (text signal).
"""
import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from sicot import contract

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220),
           (220, 30, 220)]
TRAIN_COUNTS = [24, 12, 6, 4, 3, 2]


def image_bytes(colour, rng, size=20, fmt="PNG"):
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype("uint8")).save(buf, format=fmt)
    return buf.getvalue()


def example(label, image, title, tags, record_id="r"):
    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    return tf.train.Example(features=tf.train.Features(feature={
        contract.IMAGE_KEY: b(image), contract.TITLE_KEY: b(title.encode()),
        contract.TAGS_KEY: b(tags.encode()), contract.LABEL_KEY: b(label.encode()),
        contract.RECORD_ID_KEY: b(record_id.encode())})).SerializeToString()


def make_examples(counts, seed):
    rng = np.random.default_rng(seed)
    out = []
    for k, n in enumerate(counts):
        for i in range(n):
            title = f"word{k} sale {'' if i % 3 else 'noise'}" if i % 4 else ""  # some empty
            out.append(example(f"class{k}", image_bytes(COLOURS[k], rng),
                               title, "gift|shop" if i % 2 else "", f"m:{k}-{i}"))
    rng.shuffle(out)
    return out


def varied_images(seed=7):
    """Encoded images as they come from sellers: JPEG and PNG, non-square, greyscale, and one
    larger than the stored size (re-encoded and shrunk by the Transform)."""
    rng = np.random.default_rng(seed)
    out = []
    for size, fmt, mode in (((40, 24), "JPEG", "RGB"), ((24, 40), "PNG", "RGB"),
                            ((30, 30), "JPEG", "L"), ((90, 60), "JPEG", "RGB"),
                            ((70, 70), "PNG", "RGB"), ((20, 20), "GIF", "RGB")):
        w, h = size
        base = rng.integers(30, 220, 3)
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.clip(base[None, None, :] + 60 * np.sin(xx / 5.0)[:, :, None]
                         + 40 * np.cos(yy / 7.0)[:, :, None] + rng.normal(0, 10, (h, w, 3)), 0, 255)
        img = Image.fromarray(pixels.astype("uint8")).convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        out.append(buf.getvalue())
    return out


def write_split(path, examples):
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for e in examples:
            w.write(e)


def build(root, image_size=16, max_tokens=6):
    """Writes raw train/eval/test splits under root/raw and runs the real Transform; the test
    split holds `varied_images()` (labels class0..class5, one each)."""
    from sicot.trainer.transform.preprocessing import TransformConfig
    from sicot.trainer.transform.run_local import run_transform

    raw = os.path.join(root, "raw")
    os.makedirs(raw, exist_ok=True)
    write_split(os.path.join(raw, "train-00000-of-00001.tfrecord.gz"),
                make_examples(TRAIN_COUNTS, 0))
    write_split(os.path.join(raw, "eval-00000-of-00001.tfrecord.gz"),
                make_examples([2] * len(TRAIN_COUNTS), 1))
    write_split(os.path.join(raw, "test-00000-of-00001.tfrecord.gz"),
                [example(f"class{k}", image, f"word{k}", "", f"t:{k}")
                 for k, image in enumerate(varied_images())])
    config = TransformConfig(image_size=image_size, max_tokens=max_tokens, min_token_count=1,
                             band_edges=(4, 10))
    return run_transform(raw, os.path.join(root, "transform"), config,
                         splits=("train", "eval", "test"))
