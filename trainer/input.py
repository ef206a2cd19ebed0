"""tf.data input over the transformed GZIP TFRecords (written by Transform or transform_local).

Random augmentation lives here, not in `preprocessing_fn` (it must change every epoch) and not
in the model (no tf ops in Keras 3 layers). Yields ({"image": float32 [B,S,S,3] 0..255,
"tokens": int32 [B,T]}, label int32 [B]).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from sicot import contract

AUTOTUNE = tf.data.AUTOTUNE


def augment_image(image, seed=None):
    """Random flip, pad-and-crop (up to S/8 pixels), brightness and contrast; values 0..255."""
    size = image.shape[0]
    pad = max(1, size // 8)
    image = tf.image.random_flip_left_right(image, seed=seed)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    image = tf.image.random_crop(padded, [size, size, 3], seed=seed)
    image = tf.image.random_brightness(image, max_delta=0.15 * 255.0, seed=seed)
    mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
    factor = tf.random.uniform([], 0.8, 1.2, seed=seed)
    image = (image - mean) * factor + mean
    return tf.clip_by_value(image, 0.0, 255.0)


def class_repeat_factors(class_counts) -> np.ndarray:
    """Expected copies per example of each class so that every class gets N / C per epoch."""
    counts = np.maximum(np.asarray(class_counts, dtype="float64"), 1.0)
    return (counts.sum() / len(counts) / counts).astype("float32")


def make_dataset(file_pattern, tf_transform_output, batch_size: int, *, training: bool,
                 augment: bool = False, class_counts=None, balanced_sampling: bool = False,
                 seed: int = 0, shuffle_buffer: int = 2048, repeat: bool | None = None):
    """Batched, prefetched dataset of (inputs, label) from transformed examples.

    Args:
      file_pattern: str or list of str (GZIP TFRecords of transformed tf.Example).
      tf_transform_output: `tft.TFTransformOutput` (gives the transformed feature spec).
      training: shuffle and repeat forever (use `steps_per_epoch`).
      augment: random augmentation (training only).
      class_counts: training images per class id; needed for `balanced_sampling`.
      balanced_sampling: class-balanced sampling (cRT stage 2): an example of class c is
        emitted k times, E[k] = (N / C) / n_c (random rounding), so each class is seen about
        equally often; head classes are sub-sampled, tail classes repeated.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise FileNotFoundError(f"no transformed examples match {patterns}")
    spec = tf_transform_output.transformed_feature_spec()
    parse_spec = {k: spec[k] for k in (contract.IMAGE_XF, contract.TOKENS_XF, contract.LABEL_XF)}
    repeat = training if repeat is None else repeat

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                       cycle_length=min(4, len(files)), num_parallel_calls=AUTOTUNE,
                       deterministic=not training)
    if repeat:
        ds = ds.repeat()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed)

    def parse(record):
        example = tf.io.parse_single_example(record, parse_spec)
        image = tf.cast(example[contract.IMAGE_XF], tf.float32)
        tokens = tf.cast(example[contract.TOKENS_XF], tf.int32)
        label = tf.cast(example[contract.LABEL_XF], tf.int32)
        return image, tokens, label

    ds = ds.map(parse, num_parallel_calls=AUTOTUNE)
    if balanced_sampling:
        if class_counts is None:
            raise ValueError("balanced_sampling needs class_counts")
        factors = tf.constant(class_repeat_factors(class_counts))
        num_classes = len(class_counts)

        def copies(image, tokens, label):
            f = tf.gather(factors, tf.minimum(label, num_classes - 1))
            whole = tf.floor(f)
            extra = tf.cast(tf.random.uniform([], seed=seed) < f - whole, tf.float32)
            n = tf.cast(whole + extra, tf.int64)
            return tf.data.Dataset.from_tensors((image, tokens, label)).repeat(n)

        ds = ds.flat_map(copies)
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1)
    if augment and training:
        ds = ds.map(lambda i, t, l: (augment_image(i), t, l), num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda i, t, l: ({contract.IMAGE_INPUT: i, contract.TOKENS_INPUT: t}, l),
                num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=False)
    # Multi-worker: shard by element, not by file (Transform may write a single file, and
    # FILE sharding then fails with fewer files than workers). No effect on one worker.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options).prefetch(AUTOTUNE)


def count_records(file_pattern) -> int:
    """Number of records in GZIP TFRecords matching the pattern(s)."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    n = 0
    for p in patterns:
        for f in tf.io.gfile.glob(p):
            n += sum(1 for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))
    return n
