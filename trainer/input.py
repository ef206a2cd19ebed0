"""tf.data input over the transformed GZIP TFRecords (written by Transform or transform_local).

Images arrive as compact JPEG bytes and are decoded here, in parallel, after the shuffle (the
shuffle buffer holds serialized records, bytes, not pixels): `images.model_image` (decode,
resize with padding, the same op the serving signatures run) or, for training with
`crop_min_area` > 0, a random resized crop. Random augmentation lives here, not in
`preprocessing_fn` (it must change every epoch) and not in the model (no tf ops in Keras 3
layers). Yields ({"image": float32 [B,S,S,3] 0..255, "tokens": int32 [B,T]}, label int32 [B]).

Record order. Exports grouped by SKU, appended day by day or sorted by seller reach the
trainer in that order; a shuffle window much smaller than the split then gives batches of a
handful of classes and the model forgets the head while it sees the tail. The guarantee:

- Training shuffles serialized records (before parsing, so a record costs its serialized
  size in memory) with a buffer sized from the data (`plan_shuffle`). When the training
  split fits `shuffle_memory_mb` (default 1 GiB, `ModelConfig.shuffle_memory_mb`), the
  buffer holds the whole split and every epoch is a uniform random permutation of it,
  whatever order the files hold: exact, order-independent shuffling. The memory cost is the
  split's serialized size (logged, and written to history.json).
- A larger split gets a window of `shuffle_memory_mb` worth of records; mixing then relies
  on the writers: `sicot import` and ManifestExampleGen write records in a seeded random
  order (`sicot.data.manifest.permuted`), and the files are interleaved record by record.
  If the first records still look grouped by label, the trainer logs a warning naming the
  files and the setting to raise.
- Class-balanced sampling (the cRT stage) expands each record into its copies *before* that
  shuffle, so copies of a tail example are spread over the whole epoch, not batched together.
- Each epoch draws a fresh permutation and fresh balanced copies (reshuffle and
  rerandomize each iteration), all from `seed`, so a run is reproducible.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from sicot import contract
from sicot.trainer.transform import images
from sicot.trainer.transform.images import transform_image_size

AUTOTUNE = tf.data.AUTOTUNE
logger = logging.getLogger(__name__)

# Records read for the label-order check when the shuffle window is smaller than the split.
ORDER_CHECK_RECORDS = 20_000
# Share of neighbouring records with the same label above which the files look grouped.
GROUPED_SHARE = 0.5
MAX_PARALLEL_FILES = 16


def augment_image(image, seed=None, pad_and_crop: bool = True):
    """Random flip, pad-and-crop (up to S/8 pixels), brightness and contrast; values 0..255."""
    size = image.shape[0]
    pad = max(1, size // 8)
    image = tf.image.random_flip_left_right(image, seed=seed)
    if pad_and_crop:
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


@dataclasses.dataclass(frozen=True)
class ShufflePlan:
    """How training shuffles one split (see the module docstring)."""

    records: int  # records in the split
    serialized_bytes: int  # their serialized (uncompressed) size
    buffer: int  # shuffle buffer, in records

    @property
    def exact(self) -> bool:
        """Whether every epoch is a uniform random permutation of the whole split."""
        return self.buffer >= self.records

    @property
    def buffer_bytes(self) -> int:
        """Memory the shuffle buffer holds at most (serialized records)."""
        if not self.records:
            return 0
        return int(round(self.serialized_bytes * min(1.0, self.buffer / self.records)))

    def describe(self) -> str:
        mb = self.buffer_bytes / 2**20
        if self.exact:
            return (f"exact shuffle: each epoch is a random permutation of all {self.records:,} "
                    f"records ({mb:.0f} MB of serialized records in memory)")
        return (f"windowed shuffle: {self.buffer:,} of {self.records:,} records in the buffer "
                f"({mb:.0f} MB); mixing relies on the writers' random record order")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "exact": self.exact, "buffer_bytes": self.buffer_bytes}


def _files(file_pattern) -> list[str]:
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise FileNotFoundError(f"no transformed examples match {patterns}")
    return files


def _records(files, parallel: bool = True):
    """Records of the files, interleaved one record at a time across files."""
    ds = tf.data.Dataset.from_tensor_slices(files)
    # Sequential interleave is deterministic already (and warns if told so).
    parallelism = dict(num_parallel_calls=AUTOTUNE, deterministic=True) if parallel else {}
    return ds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                         cycle_length=min(MAX_PARALLEL_FILES, len(files)), block_length=1,
                         **parallelism)


def scan_records(file_pattern) -> tuple[int, int]:
    """(records, serialized bytes) of GZIP TFRecords matching the pattern(s): one pass."""
    sizes = _records(_files(file_pattern)).map(
        lambda r: tf.cast(tf.strings.length(r), tf.int64), num_parallel_calls=AUTOTUNE)
    count, total = sizes.reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
                                lambda acc, n: (acc[0] + 1, acc[1] + n))
    return int(count), int(total)


def count_records(file_pattern) -> int:
    """Number of records in GZIP TFRecords matching the pattern(s)."""
    return scan_records(file_pattern)[0]


def plan_shuffle(file_pattern, memory_mb: float, min_buffer: int = 1024) -> ShufflePlan:
    """A shuffle buffer sized from the data: the whole split when it fits `memory_mb`."""
    if memory_mb <= 0:
        raise ValueError(f"shuffle memory must be > 0 MB, got {memory_mb}")
    records, serialized = scan_records(file_pattern)
    if records == 0:
        return ShufflePlan(0, 0, 1)
    per_record = max(1.0, serialized / records)
    fits = int(memory_mb * 2**20 // per_record)
    buffer = records if fits >= records else max(min(min_buffer, records), fits)
    return ShufflePlan(records, serialized, buffer)


def neighbour_label_share(file_pattern, max_records: int = ORDER_CHECK_RECORDS) -> float:
    """Share of neighbouring records (in file order) that have the same label.

    About the sum of squared class shares for records in random order (a few percent for a
    long tail of hundreds of classes); close to 1 for files grouped by class.
    """
    spec = {contract.LABEL_XF: tf.io.FixedLenFeature([], tf.int64)}
    labels = np.concatenate([
        b.numpy() for b in _records(_files(file_pattern), parallel=False).take(max_records)
        .batch(1024).map(lambda r: tf.io.parse_example(r, spec)[contract.LABEL_XF])])
    if len(labels) < 2:
        return 0.0
    return float(np.mean(labels[1:] == labels[:-1]))


def make_dataset(file_pattern, tf_transform_output, batch_size: int, *, training: bool,
                 augment: bool = False, class_counts=None, balanced_sampling: bool = False,
                 seed: int = 0, shuffle_buffer: int | None = None,
                 shuffle_memory_mb: float = 1024, repeat: bool | None = None,
                 image_size: int | None = None, crop_min_area: float = 0.0):
    """Batched, prefetched dataset of (inputs, label) from transformed examples.

    Args:
      file_pattern: str or list of str (GZIP TFRecords of transformed tf.Example).
      tf_transform_output: `tft.TFTransformOutput` (gives the transformed feature spec).
      training: shuffle (see the module docstring) and repeat forever (use
        `steps_per_epoch`).
      augment: random augmentation (training only).
      class_counts: training images per class id; needed for `balanced_sampling`.
      balanced_sampling: class-balanced sampling (cRT stage 2): an example of class c is
        emitted k times, E[k] = (N / C) / n_c (random rounding), so each class is seen about
        equally often; head classes are sub-sampled, tail classes repeated.
      shuffle_buffer: records in the shuffle buffer; None sizes it from the data with
        `plan_shuffle(file_pattern, shuffle_memory_mb)`.
      image_size: model input side S; None reads the Transform's (`transform_image_size`).
      crop_min_area: > 0 (with augment, training): random resized crop of crop_min_area..1 of
        the stored image's area instead of pad-and-crop (`images.random_resized_crop`).
    """
    files = _files(file_pattern)
    spec = tf_transform_output.transformed_feature_spec()
    parse_spec = {k: spec[k] for k in (contract.IMAGE_XF, contract.TOKENS_XF, contract.LABEL_XF)}
    label_spec = {contract.LABEL_XF: spec[contract.LABEL_XF]}
    repeat = training if repeat is None else repeat
    size = transform_image_size(tf_transform_output) if image_size is None else int(image_size)
    if balanced_sampling and class_counts is None:
        raise ValueError("balanced_sampling needs class_counts")

    ds = _records(files)
    if training:
        if shuffle_buffer is None:
            plan = plan_shuffle(files, shuffle_memory_mb)
            shuffle_buffer = plan.buffer
            logger.info("training input %s: %s", files[0] if len(files) == 1 else
                        f"{len(files)} files", plan.describe())
            if not plan.exact:
                warn_if_grouped(files)
        shuffle_buffer = max(1, int(shuffle_buffer))
        if balanced_sampling:
            factors = tf.constant(class_repeat_factors(class_counts))
            num_classes = len(class_counts)

            def copies(record, random_int):
                label = tf.io.parse_single_example(record, label_spec)[contract.LABEL_XF]
                f = tf.gather(factors, tf.minimum(tf.cast(label, tf.int32), num_classes - 1))
                whole = tf.floor(f)
                u = tf.cast(random_int % (1 << 24), tf.float32) / float(1 << 24)
                n = tf.cast(whole + tf.cast(u < f - whole, tf.float32), tf.int64)
                return tf.data.Dataset.from_tensors(record).repeat(n)

            # The random rounding draws anew every epoch (rerandomize_each_iteration), and
            # the copies are made before the shuffle so they spread over the epoch.
            random_ints = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip((ds, random_ints)).flat_map(copies)
            # An epoch of copies is N records give or take a few percent; the copies share
            # their record's memory.
            shuffle_buffer += shuffle_buffer // 8
        # Shuffle, then repeat: with a buffer holding the split, each epoch is a fresh
        # permutation (reshuffle_each_iteration), reproducible from the seed.
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
    elif repeat:
        ds = ds.repeat()

    def parse(record):
        example = tf.io.parse_single_example(record, parse_spec)
        image = example[contract.IMAGE_XF]  # JPEG bytes, decoded below
        tokens = tf.cast(example[contract.TOKENS_XF], tf.int32)
        label = tf.cast(example[contract.LABEL_XF], tf.int32)
        return image, tokens, label

    # Parse and decode come after the shuffle (and the balanced copies), so the buffer holds
    # compact serialized records and every copy of an image is decoded and augmented anew.
    ds = ds.map(parse, num_parallel_calls=AUTOTUNE)
    if augment and training and crop_min_area > 0:
        def decode(data):
            return augment_image(images.random_resized_crop(data, size, crop_min_area),
                                 pad_and_crop=False)
    elif augment and training:
        def decode(data):
            return augment_image(images.model_image(data, size))
    else:
        def decode(data):
            return images.model_image(data, size)
    ds = ds.map(lambda i, t, l: (decode(i), t, l), num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda i, t, l: ({contract.IMAGE_INPUT: i, contract.TOKENS_INPUT: t}, l),
                num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=False)
    # Multi-worker: shard by element, not by file (Transform may write a single file, and
    # FILE sharding then fails with fewer files than workers). No effect on one worker.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options).prefetch(AUTOTUNE)


def warn_if_grouped(file_pattern) -> float:
    """Logs a warning when the files' first records look grouped by label; returns the share."""
    share = neighbour_label_share(file_pattern)
    if share > GROUPED_SHARE:
        logger.warning(
            "training files %s look grouped by label (%.0f%% of neighbouring records share "
            "a label) and the split does not fit the shuffle memory: batches will hold few "
            "classes. Rewrite them in random order (sicot import / ExampleGen do) or raise "
            "ModelConfig.shuffle_memory_mb.", file_pattern, 100 * share)
    return share
