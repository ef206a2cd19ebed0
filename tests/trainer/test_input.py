"""The tf.data input over real Transform output."""
import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from sicot.trainer.input import augment_image, class_repeat_factors, make_dataset
from sicot.trainer.transform.output import model_shapes, read_class_counts


@pytest.fixture(scope="module")
def tto(tiny_transform):
    return tft.TFTransformOutput(tiny_transform.transform_output_dir)


def test_eval_dataset_shapes_dtypes_and_all_records(tiny_transform, tto):
    ds = make_dataset(tiny_transform.transformed_files["eval"], tto, 5, training=False)
    batches = list(ds)
    assert sum(int(y.shape[0]) for _, y in batches) == tiny_transform.num_examples["eval"]
    x, y = batches[0]
    assert x["image"].dtype == tf.float32 and x["image"].shape[1:] == (16, 16, 3)
    assert x["tokens"].dtype == tf.int32 and x["tokens"].shape[1:] == (6,)
    assert y.dtype == tf.int32
    assert float(tf.reduce_max(x["image"])) <= 255 and float(tf.reduce_min(x["image"])) >= 0


def test_training_dataset_repeats_and_augments(tiny_transform, tto):
    ds = make_dataset(tiny_transform.transformed_files["train"], tto, 8, training=True,
                      augment=True, seed=1)
    n = tiny_transform.num_examples["train"]
    labels = [int(v) for _, y in ds.take(n // 8 + 3) for v in y]
    assert len(labels) > n  # repeats past one pass


def test_training_with_random_resized_crop(tiny_transform, tto):
    ds = make_dataset(tiny_transform.transformed_files["train"], tto, 8, training=True,
                      augment=True, seed=1, crop_min_area=0.3)
    x, y = next(iter(ds))
    assert x["image"].shape == (8, 16, 16, 3) and y.shape == (8,)
    assert float(tf.reduce_min(x["image"])) >= 0 and float(tf.reduce_max(x["image"])) <= 255


def test_augment_image_stays_in_range_and_changes_pixels():
    image = tf.random.uniform([16, 16, 3], 0, 255, seed=0)
    out = augment_image(image, seed=3)
    assert out.shape == (16, 16, 3)
    assert float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 255
    assert not np.allclose(out.numpy(), image.numpy())


def test_class_counts_and_shapes_from_the_transform_output(tto):
    names, counts = read_class_counts(tto)
    assert names == [f"class{k}" for k in range(6)]  # frequency-sorted ids
    assert counts == [24, 12, 6, 4, 3, 2]
    image_size, max_tokens, vocab_size = model_shapes(tto)
    assert (image_size, max_tokens) == (16, 6) and vocab_size > 8


def test_class_balanced_sampling_evens_out_the_classes(tiny_transform, tto):
    _, counts = read_class_counts(tto)
    factors = class_repeat_factors(counts)
    np.testing.assert_allclose(factors * np.array(counts), sum(counts) / len(counts), rtol=1e-5)
    ds = make_dataset(tiny_transform.transformed_files["train"], tto, 32, training=True,
                      class_counts=counts, balanced_sampling=True, seed=0)
    seen = collections.Counter(int(v) for _, y in ds.take(60) for v in y)
    share = np.array([seen[c] for c in range(6)]) / sum(seen.values())
    natural = np.array(counts) / sum(counts)
    assert natural[0] > 0.4 and share[0] < 0.25  # head no longer dominates
    assert share[5] > 0.1 > natural[5]  # the 2-image tail class is seen far more often


def test_missing_files_raise(tto, tmp_path):
    with pytest.raises(FileNotFoundError, match="no transformed examples"):
        make_dataset(str(tmp_path / "none-*.gz"), tto, 4, training=False)
