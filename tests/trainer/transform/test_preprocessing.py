"""preprocessing_fn run for real: eagerly, and under tft_beam through transform_local."""
import glob
import io
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image

from sicot import contract
from sicot.contract import band_of_count
from sicot.trainer.transform import images
from sicot.trainer.transform.preprocessing import TransformConfig, tokenize
from sicot.trainer.transform.run_local import run_transform


def _image_bytes(color, size=(30, 20), fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def _example(label, title, tags, color=(200, 10, 10), fmt="PNG", record_id="x"):
    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
    return tf.train.Example(features=tf.train.Features(feature={
        contract.IMAGE_KEY: b(_image_bytes(color, fmt=fmt)),
        contract.TITLE_KEY: b(title.encode()),
        contract.TAGS_KEY: b(tags.encode()),
        contract.LABEL_KEY: b(label.encode()),
        contract.RECORD_ID_KEY: b(record_id.encode()),
    })).SerializeToString()


def _write(path, examples):
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
        for e in examples:
            w.write(e)


def test_tokenize_case_folds_splits_cjk_and_drops_punctuation():
    tokens = tokenize(tf.constant(["Red MUG, hot-sale!! 红色杯子", ""]),
                      tf.constant(["kitchen|Gift Idea", ""])).to_list()
    assert tokens[0] == [b"red", b"mug", b"hot", b"sale", "红".encode(), "色".encode(),
                         "杯".encode(), "子".encode(), b"kitchen", b"gift", b"idea"]
    assert tokens[1] == []


def test_model_image_keeps_aspect_with_padding():
    wide = _image_bytes((255, 0, 0), size=(40, 20))
    pixels = images.model_images(tf.constant([wide]), 16).numpy()
    assert pixels.shape == (1, 16, 16, 3) and pixels.dtype == np.float32
    # 40x20 -> 16x8 content centred vertically, black padding above and below.
    assert pixels[0, 0].max() == 0 and pixels[0, -1].max() == 0
    assert (pixels[0, 8, :, 0] == 255).all() and (pixels[0, 8, :, 1] == 0).all()


def _decoded(data):
    return Image.open(io.BytesIO(data))


def test_store_images_keeps_fitting_jpegs_and_shrinks_or_reencodes_the_rest():
    rng = np.random.default_rng(0)

    def encode(shape, fmt, mode="RGB"):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).convert(mode).save(buf, format=fmt)
        return buf.getvalue()

    small_jpeg = encode((20, 30, 3), "JPEG")
    inputs = [small_jpeg, encode((20, 30, 3), "PNG"), encode((100, 50, 3), "JPEG"),
              encode((20, 20, 3), "JPEG", mode="L"), encode((64, 16, 3), "PNG")]
    stored = images.store_images(tf.constant(inputs), max_side=32).numpy()
    assert stored[0] == small_jpeg  # fits: kept byte for byte, never decoded
    for data in stored:
        assert data[:2] == b"\xff\xd8" and _decoded(data).mode == "RGB"
    assert [_decoded(d).size for d in stored] == [(30, 20), (30, 20), (16, 32), (20, 20), (8, 32)]
    with pytest.raises(tf.errors.InvalidArgumentError):
        images.store_images(tf.constant([b"not an image"]), max_side=32)


def test_random_resized_crop_is_s_by_s_and_varies():
    data = _image_bytes((10, 200, 10), size=(60, 40), fmt="JPEG")
    crops = [images.random_resized_crop(tf.constant(data), 16, min_area=0.2).numpy() for _ in range(2)]
    assert all(c.shape == (16, 16, 3) and c.min() >= 0 and c.max() <= 255 for c in crops)
    png = _image_bytes((10, 200, 10), size=(60, 40), fmt="PNG")
    assert images.random_resized_crop(tf.constant(png), 16).shape == (16, 16, 3)


def test_band_of_count_edges():
    assert [band_of_count(c) for c in (0, 19, 20, 100, 101)] == [
        "few", "few", "medium", "medium", "many"]


def test_config_rejects_unknown_keys_and_round_trips():
    cfg = TransformConfig(image_size=16, band_edges=(2, 3))
    assert TransformConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="imagesize"):
        TransformConfig.from_dict({"imagesize": 3})
    with pytest.raises(ValueError, match="band_edges"):
        TransformConfig(band_edges=(5, 2))


def test_run_transform_vocabularies_bands_and_shapes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    # Class counts in train: a=4 (many), b=2 (medium), c=1 (few) with band_edges (2, 3).
    train = ([_example("a", "red mug 红杯", "kitchen|gift")] * 4
             + [_example("b", "blue bottle", "", color=(0, 0, 200), fmt="JPEG")] * 2
             + [_example("c", "", "")])
    _write(str(raw / "train-00000-of-00001.tfrecord.gz"), train)
    _write(str(raw / "test-00000-of-00001.tfrecord.gz"),
           [_example("c", "red bottle", "zzz-unseen"), _example("d", "mug", "")])
    cfg = TransformConfig(image_size=16, max_tokens=4, min_token_count=2, band_edges=(2, 3))
    result = run_transform(str(raw), str(tmp_path / "out"), cfg)
    assert result.num_examples == {"train": 7, "test": 2}

    tft_out = tft.TFTransformOutput(result.transform_output_dir)
    labels = [l.decode() if isinstance(l, bytes) else l
              for l in tft_out.vocabulary_by_name(contract.LABEL_VOCAB_NAME)]
    assert labels == ["a", "b", "c"]
    with open(tft_out.vocabulary_file_by_name(contract.LABEL_COUNTS_VOCAB_NAME)) as f:
        counts = [line.rstrip("\n").split(" ", 1) for line in f]
    assert counts == [["4", "a"], ["2", "b"], ["1", "c"]]
    tokens = [t.decode() if isinstance(t, bytes) else t
              for t in tft_out.vocabulary_by_name(contract.TOKEN_VOCAB_NAME)]
    # min_token_count=2: class a's (x4) and b's (x2) tokens, none seen once; max_tokens=4
    # cuts a's "kitchen gift" before the vocabulary sees them.
    assert set(tokens) == {"red", "mug", "红", "杯", "blue", "bottle"}

    spec = tft_out.transformed_feature_spec()
    ds = tf.data.TFRecordDataset(glob.glob(result.transformed_files["test"]),
                                 compression_type="GZIP").map(
        lambda s: tf.io.parse_single_example(s, spec))
    rows = list(ds.as_numpy_iterator())
    stored = rows[0][contract.IMAGE_XF]  # compact JPEG bytes, decoded by the trainer
    assert stored[:2] == b"\xff\xd8" and _decoded(stored).size == (30, 20)
    assert tft_out.vocabulary_by_name(contract.IMAGE_SIZE_VOCAB_NAME) == [b"16"]
    # Test "c": label id 2, few; tokens red, bottle known, "zzz", "unseen" out of vocabulary.
    vocab_id = {t: i + contract.FIRST_VOCAB_TOKEN_ID for i, t in enumerate(tokens)}
    assert rows[0][contract.LABEL_XF] == 2 and rows[0][contract.BAND_XF] == b"few"
    assert list(rows[0][contract.TOKENS_XF]) == [vocab_id["red"], vocab_id["bottle"],
                                                 contract.OOV_TOKEN_ID, contract.OOV_TOKEN_ID]
    # Unseen label "d" -> num_classes (3), band few, padded tokens.
    assert rows[1][contract.LABEL_XF] == 3 and rows[1][contract.BAND_XF] == b"few"
    assert list(rows[1][contract.TOKENS_XF]) == [vocab_id["mug"], 0, 0, 0]

    train_rows = list(tf.data.TFRecordDataset(
        glob.glob(result.transformed_files["train"]), compression_type="GZIP").map(
        lambda s: tf.io.parse_single_example(s, spec)).as_numpy_iterator())
    bands = {(r[contract.LABEL_XF], r[contract.BAND_XF]) for r in train_rows}
    assert bands == {(0, b"many"), (1, b"medium"), (2, b"few")}
    # Empty title and tags -> all padding, no error.
    empty = [r for r in train_rows if r[contract.LABEL_XF] == 2][0]
    assert (empty[contract.TOKENS_XF] == 0).all()

    # The TFT layer (what serving uses) gives the same features as the Beam run.
    layer = tft_out.transform_features_layer()
    raw_test = [_example("c", "red bottle", "zzz-unseen")]
    parsed = tf.io.parse_example(tf.constant(raw_test), tft_out.raw_feature_spec())
    served = layer(parsed)
    np.testing.assert_array_equal(served[contract.IMAGE_XF].numpy()[0], rows[0][contract.IMAGE_XF])
    np.testing.assert_array_equal(served[contract.TOKENS_XF].numpy()[0],
                                  rows[0][contract.TOKENS_XF])
