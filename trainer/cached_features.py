"""Training over a frozen backbone's features, computed once (`ModelConfig.cache_features`).

While the backbone is frozen (the first `backbone_frozen_epochs` of a pretrained tower, the
cRT stage 2 after one) its pooled features of an unaugmented image never change, so running
it every step repeats the same work: EfficientNet-Lite0 at 96 px reads about 300 images a
second on two CPU cores, the heads over 1,280 features tens of thousands. Here the backbone
runs once per stage over the split (`extract`), and the stage's epochs read the features from
memory (`feature_dataset`): {"image_features": float32 [B, F], "tokens": int32 [B, T]}, label.
`SICoTModel` embeds `image_features` with the tower's projection, which keeps learning.
With a `cache_dir` (`sicot train` uses its work dir) a split's features are also kept on disk
under a key made of the backbone's weights, the image size and the files (path, size, mtime),
so runs that start from the same weights on the same data (other presets, seeds) load them.

What the stage gives up: augmentation (each image has one feature vector). Memory: N x F x 4
bytes (46K images x 1,280 features: 240 MB). Shuffling is exact (a fresh permutation of the
whole split every epoch), and class-balanced sampling draws its copies anew every epoch, as
`input.make_dataset` does, all from the seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import time

import numpy as np
import tensorflow as tf

from sicot import contract
from sicot.trainer.input import class_repeat_factors, make_dataset
from sicot.trainer.model.sicot_model import FEATURES_INPUT

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CachedSplit:
    """One split's backbone features with its tokens and labels, in record order."""

    features: np.ndarray  # float32 [N, F]
    tokens: np.ndarray  # int32 [N, T]
    labels: np.ndarray  # int32 [N]
    seconds: float  # time the extraction took

    def __post_init__(self):
        sizes = (len(self.features), len(self.tokens), len(self.labels))
        if len(set(sizes)) != 1:
            raise ValueError(f"CachedSplit: {sizes[0]} feature rows, {sizes[1]} token rows and "
                             f"{sizes[2]} labels; they must match")

    def __len__(self) -> int:
        return len(self.labels)


def cache_key(tower, file_pattern, image_size) -> str:
    """Hex digest of the backbone's weights, the image size and the files' identity."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    digest = hashlib.sha256(f"image_size={image_size}".encode())
    # Values and shapes in layer order, not variable paths: the same backbone inside a model
    # (sicot/visual_tower/...) or alone (visual_tower/...) must give the same key.
    for layer in tower.backbone_layers():
        for weight in layer.weights:
            digest.update(str(tuple(weight.shape)).encode())
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    for name in files:
        stat = tf.io.gfile.stat(name)
        digest.update(f"{name}|{stat.length}|{stat.mtime_nsec}".encode())
    return digest.hexdigest()[:24]


def extract(tower, file_pattern, tf_transform_output, *, batch_size: int = 64,
            image_size: int | None = None, cache_dir: str | None = None) -> CachedSplit:
    """Runs the tower's backbone (inference mode) once over the unaugmented images, or loads
    the features an earlier run with the same backbone weights and files left in
    `cache_dir`."""
    start = time.perf_counter()
    path = None
    if cache_dir:
        key = cache_key(tower, file_pattern, image_size)
        path = os.path.join(cache_dir, f"features-{key}.npz")
        if tf.io.gfile.exists(path):
            try:
                with tf.io.gfile.GFile(path, "rb") as f:
                    arrays = np.load(io.BytesIO(f.read()))
                    split = CachedSplit(arrays["features"], arrays["tokens"],
                                        arrays["labels"], time.perf_counter() - start)
                logger.info("backbone features of %d images from %s", len(split), path)
                return split
            except (OSError, ValueError, KeyError) as e:  # a torn write: compute again
                logger.warning("feature cache %s unreadable (%s); computing again", path, e)
    ds = make_dataset(file_pattern, tf_transform_output, batch_size, training=False,
                      augment=False, image_size=image_size)
    features_fn = tf.function(lambda images: tower.features(images, training=False),
                              reduce_retracing=True)
    features, tokens, labels = [], [], []
    for inputs, label in ds:
        features.append(np.asarray(features_fn(inputs[contract.IMAGE_INPUT]), "float32"))
        tokens.append(inputs[contract.TOKENS_INPUT].numpy())
        labels.append(label.numpy())
    if not labels:
        raise ValueError(f"cached features: no examples in {file_pattern}")
    split = CachedSplit(np.concatenate(features), np.concatenate(tokens).astype("int32"),
                        np.concatenate(labels).astype("int32"), time.perf_counter() - start)
    logger.info("cached backbone features of %d images (%d each) in %.1f s (%.0f images/s)",
                len(split), split.features.shape[1], split.seconds,
                len(split) / max(split.seconds, 1e-9))
    if path:
        buffer = io.BytesIO()
        np.savez(buffer, features=split.features, tokens=split.tokens, labels=split.labels)
        tf.io.gfile.makedirs(cache_dir)
        partial = f"{path}.partial-{os.getpid()}"
        with tf.io.gfile.GFile(partial, "wb") as f:
            f.write(buffer.getvalue())
        tf.io.gfile.rename(partial, path, overwrite=True)
    return split


def _balanced_epoch(labels, factors, seed_pair):
    """Indices of one class-balanced epoch: example i appears floor(f) or floor(f) + 1 times
    (f its class's repeat factor, random rounding), in random order."""
    f = tf.gather(factors, labels)
    whole = tf.floor(f)
    u = tf.random.stateless_uniform(tf.shape(f), seed=seed_pair)
    copies = tf.cast(whole + tf.cast(u < f - whole, tf.float32), tf.int32)
    indices = tf.repeat(tf.range(tf.size(labels)), copies)
    return tf.random.experimental.stateless_shuffle(indices, seed=seed_pair + 1)


def feature_dataset(split: CachedSplit, batch_size: int, *, training: bool, seed: int = 0,
                    balanced_sampling: bool = False, class_counts=None) -> tf.data.Dataset:
    """Batches of ({image_features, tokens}, label) from a cached split.

    training: every epoch a fresh permutation of the split (or, with `balanced_sampling`, of
    a fresh class-balanced draw of copies, as `input.make_dataset`), repeated forever (use
    `steps_per_epoch`); otherwise one pass in record order with its size declared.
    """
    features = tf.constant(split.features)
    tokens = tf.constant(split.tokens)
    labels = tf.constant(split.labels)
    if training:
        if balanced_sampling:
            if class_counts is None:
                raise ValueError("balanced_sampling needs class_counts")
            factors = tf.constant(class_repeat_factors(class_counts))
            seeds = tf.data.Dataset.random(seed=seed).batch(2)  # an epoch's seed pair
            indices = seeds.flat_map(lambda pair: tf.data.Dataset.from_tensor_slices(
                _balanced_epoch(labels, factors, pair)))
        else:
            indices = (tf.data.Dataset.range(len(split)).shuffle(
                len(split), seed=seed, reshuffle_each_iteration=True).repeat())
    else:
        indices = tf.data.Dataset.range(len(split))
    ds = indices.batch(batch_size).map(
        lambda i: ({FEATURES_INPUT: tf.gather(features, i),
                    contract.TOKENS_INPUT: tf.gather(tokens, i)}, tf.gather(labels, i)),
        num_parallel_calls=tf.data.AUTOTUNE)
    if not training:
        ds = ds.apply(tf.data.experimental.assert_cardinality(
            -(-len(split) // batch_size)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
