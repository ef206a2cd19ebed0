"""The exported SavedModel's signatures against the eager Keras model on the same inputs."""
import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the TFT graph)
import tensorflow_transform as tft

from sicot import contract
from sicot.contract import SIGNATURES
from sicot.trainer.export.saved_model import export_serving_model
from sicot.trainer.transform import images
from sicot.trainer.input import make_dataset
from sicot.trainer.model.config import ModelConfig
from sicot.trainer.model.sicot_model import build_model
from sicot.trainer.transform.output import model_shapes, read_class_counts


def _tiny_dataset_module():
    path = os.path.join(os.path.dirname(__file__), "..", "tiny_dataset.py")
    spec = importlib.util.spec_from_file_location("sicot_tests_tiny_dataset_export", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = _tiny_dataset_module()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    result = TINY.build(str(root))
    tto = tft.TFTransformOutput(result.transform_output_dir)
    names, counts = read_class_counts(tto)
    image_size, max_tokens, vocab_size = model_shapes(tto)
    config = ModelConfig.preset("sicot").replace(embedding_dim=8, token_dim=6, attention_rank=3)
    model = build_model(config, len(names), vocab_size, counts, max_tokens, image_size)
    export_dir = export_serving_model(model, tto, str(root / "saved_model"), top_k=3)
    loaded = tf.saved_model.load(export_dir)
    raw = TINY.make_examples([1] * 6, seed=5)  # one example per class, some without text
    return dict(model=model, tto=tto, loaded=loaded, raw=raw, names=names, result=result,
                image_size=image_size)


def _eager(exported, serialized, with_text):
    """Transform with tf.Transform's own API, then the Keras model: the reference path."""
    tto = exported["tto"]
    parsed = tf.io.parse_example(serialized, tto.raw_feature_spec())
    xf = tto.transform_raw_features(parsed, drop_unused_features=True)
    inputs = {"image": images.model_images(xf[contract.IMAGE_XF], exported["image_size"])}
    if with_text:
        inputs["tokens"] = tf.cast(xf[contract.TOKENS_XF], tf.int32)
    return exported["model"](inputs, training=False), xf


def _check_topk(out, logits, names, k=3):
    probs = tf.nn.softmax(logits).numpy()
    ref_ids = np.argsort(-probs, axis=1)[:, :k]
    np.testing.assert_array_equal(out["class_ids"].numpy(), ref_ids)
    np.testing.assert_allclose(out["scores"].numpy(),
                               np.take_along_axis(probs, ref_ids, 1), rtol=1e-4, atol=1e-6)
    assert [[c.decode() for c in row] for row in out["classes"].numpy()] == [
        [names[i] for i in row] for row in ref_ids]


def test_all_signatures_are_exported(exported):
    assert set(SIGNATURES) <= set(exported["loaded"].signatures)


def test_serving_examples_matches_the_eager_visual_head(exported):
    serialized = tf.constant(exported["raw"])
    out = exported["loaded"].signatures["serving_examples"](examples=serialized)
    ref, _ = _eager(exported, serialized, with_text=False)
    _check_topk(out, ref["visual_logits"], exported["names"])
    np.testing.assert_allclose(out["embedding"].numpy(), ref["embedding"].numpy(),
                               rtol=1e-4, atol=1e-5)


def test_serving_default_takes_image_bytes_only(exported):
    serialized = tf.constant(exported["raw"])
    images = tf.io.parse_example(
        serialized, {"image": tf.io.FixedLenFeature([], tf.string)})["image"]
    out = exported["loaded"].signatures["serving_default"](image=images)
    ref, _ = _eager(exported, serialized, with_text=False)
    _check_topk(out, ref["visual_logits"], exported["names"])


def test_serving_image_text_uses_the_fused_head(exported):
    serialized = tf.constant(exported["raw"])
    parsed = tf.io.parse_example(serialized, exported["tto"].raw_feature_spec())
    out = exported["loaded"].signatures["serving_image_text"](
        image=parsed["image"], title=parsed["title"], tags=parsed["tags"])
    ref, _ = _eager(exported, serialized, with_text=True)
    _check_topk(out, ref["fused_logits"], exported["names"])


def test_examples_without_label_title_tags_are_served(exported):
    image = TINY.image_bytes(TINY.COLOURS[0], np.random.default_rng(0))
    bare = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}))
    out = exported["loaded"].signatures["serving_examples"](
        examples=tf.constant([bare.SerializeToString()]))
    by_bytes = exported["loaded"].signatures["serving_default"](image=tf.constant([image]))
    np.testing.assert_array_equal(out["class_ids"].numpy(), by_bytes["class_ids"].numpy())
    np.testing.assert_allclose(out["scores"].numpy(), by_bytes["scores"].numpy(), rtol=1e-5)


def test_transform_features_and_eval_examples(exported):
    serialized = tf.constant(exported["raw"])
    xf = exported["loaded"].signatures["transform_features"](examples=serialized)
    ref_text, ref_xf = _eager(exported, serialized, with_text=True)
    for key in (contract.IMAGE_XF, contract.TOKENS_XF, contract.LABEL_XF, contract.BAND_XF):
        np.testing.assert_array_equal(xf[key].numpy(), ref_xf[key].numpy())
    ev = exported["loaded"].signatures["eval_examples"](examples=serialized)
    ref_image, _ = _eager(exported, serialized, with_text=False)
    np.testing.assert_allclose(ev["image_only"].numpy(),
                               tf.nn.softmax(ref_image["visual_logits"]).numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ev["image_text"].numpy(),
                               tf.nn.softmax(ref_text["fused_logits"]).numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ev["image_text"].numpy().sum(1), 1.0, rtol=1e-5)


def test_corrupt_image_is_an_invalid_argument(exported):
    with pytest.raises(tf.errors.InvalidArgumentError):
        exported["loaded"].signatures["serving_default"](image=tf.constant([b"not an image"]))


def test_training_input_and_serving_see_the_same_images(exported):
    """Seller images (JPEG, PNG, GIF, greyscale, non-square, one larger than the stored size)
    through the two real paths: the Beam Transform's records read by the trainer's tf.data
    input, and the exported serving signature on the raw bytes. Same pixels, same embedding."""
    raw_images = TINY.varied_images()
    size = exported["image_size"]
    (x, _), = make_dataset(exported["result"].transformed_files["test"], exported["tto"],
                           len(raw_images), training=False)
    trained_on = x["image"].numpy()
    assert trained_on.shape == (len(raw_images), size, size, 3)
    # The serving graph's image path: the TFT layer's stored JPEG, decoded by model_images.
    layer = exported["tto"].transform_features_layer()
    raw = {k: tf.constant([b""] * len(raw_images)) for k in contract.RAW_FEATURE_KEYS}
    raw[contract.IMAGE_KEY] = tf.constant(raw_images)
    served_pixels = images.model_images(layer(raw)[contract.IMAGE_XF], size).numpy()
    # Beam may write records in another order: match rows by their pixels, exactly.
    position = {row.tobytes(): i for i, row in enumerate(served_pixels)}
    order = [position.get(row.tobytes()) for row in trained_on]
    assert sorted(o for o in order if o is not None) == list(range(len(raw_images))), order
    served = exported["loaded"].signatures["serving_default"](image=tf.constant(raw_images))
    eager = exported["model"]({"image": tf.constant(trained_on)}, training=False)
    np.testing.assert_allclose(served["embedding"].numpy()[order], eager["embedding"].numpy(),
                               rtol=1e-5, atol=1e-5)
