"""The canary (serving/canary.py): a real server on loopback, the real tensorflow-serving-api
client, every signature of the candidate, and each way a candidate must be refused."""
import os

import numpy as np
import pytest

from sicot.serving.canary import CanaryLimits, agreement, run_canary

COLOURS = [(220, 30, 30), (30, 200, 40), (20, 40, 230), (240, 240, 240)]


def encode_image(rgb, size=24):
    import io

    from PIL import Image

    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[:] = rgb
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def records():
    """Eval-like raw records: image, title, tags, label, record_id (bytes)."""
    return [{"image": encode_image(COLOURS[i % len(COLOURS)]), "title": f"item {i}".encode(),
             "tags": b"sale|new", "label": f"class-{i % 3}".encode(),
             "record_id": f"eval.jsonl:{i}".encode()} for i in range(6)]


def write_module_model(export_dir, serving_default_fails=False, skewed=False, classes=4):
    """A tf.Module with the SICoT signature names: top-k answers from the mean colour, and
    eval_examples probabilities from the same scores (or, `skewed`, from reversed ones)."""
    import tensorflow as tf

    names = tf.constant([f"class-{i}" for i in range(classes)])
    weights = tf.constant(np.random.default_rng(0).normal(size=(3, classes)), tf.float32)

    def probabilities(image):
        def mean_colour(data):
            pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
            return tf.reduce_mean(tf.cast(pixels, tf.float32), axis=[0, 1]) / 255.0

        colour = tf.map_fn(mean_colour, image, fn_output_signature=tf.TensorSpec([3], tf.float32))
        return tf.nn.softmax(4.0 * colour @ weights, axis=-1)

    def answer(probs):
        scores, ids = tf.math.top_k(probs, k=2)
        return {"classes": tf.gather(names, ids), "class_ids": tf.cast(ids, tf.int64),
                "scores": scores}

    spec = {k: tf.io.FixedLenFeature([], tf.string, default_value="")
            for k in ("image", "title", "tags", "record_id")}

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image")])
        def serve(self, image):
            if serving_default_fails:  # a serving-only input path broken at run time
                tf.debugging.assert_equal(tf.size(image), -1, message="broken serving path")
            return answer(probabilities(image))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_examples(self, examples):
            return answer(probabilities(tf.io.parse_example(examples, spec)["image"]))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def eval_examples(self, examples):
            probs = probabilities(tf.io.parse_example(examples, spec)["image"])
            if skewed:
                probs = tf.reverse(probs, axis=[1])
            return {"image_only": probs, "image_text": probs}

    model = Model()
    tf.saved_model.save(model, export_dir, signatures={
        "serving_default": model.serve, "serving_examples": model.serve_examples,
        "eval_examples": model.eval_examples})
    return export_dir


FAST = CanaryLimits(requests_per_signature=3)


def test_real_sicot_export_passes_with_every_signature_checked(sicot_export_dir, records):
    report = run_canary(sicot_export_dir, records, CanaryLimits(requests_per_signature=5))
    assert report.passed, report.failures
    assert set(report.signatures) == {"serving_default", "serving_image_text",
                                      "serving_examples", "transform_features", "eval_examples"}
    for name, result in report.signatures.items():
        assert result["requests"] == 1 + 5, name
        assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"], name
    for name in ("serving_default", "serving_examples", "serving_image_text"):
        assert report.signatures[name]["agreement"] == 1.0, name
    assert report.records == len(records) and report.load_seconds > 0
    assert report.to_dict()["max_p99_ms"] == report.max_p99_ms > 0


def test_consistent_module_model_passes(tmp_path, records):
    report = run_canary(write_module_model(str(tmp_path / "m")), records, FAST)
    assert report.passed, report.failures
    assert report.signatures["serving_default"]["agreement"] == 1.0


def test_a_failing_serving_signature_is_refused(tmp_path, records):
    model = write_module_model(str(tmp_path / "m"), serving_default_fails=True)
    report = run_canary(model, records, FAST)
    assert not report.passed
    assert any(f.startswith("serving_default: gRPC Predict failed: INVALID_ARGUMENT")
               and "broken serving path" in f for f in report.failures), report.failures
    # the other signatures were still checked, and they answered
    assert report.signatures["serving_examples"]["requests"] == 1 + 3


def test_serving_answers_that_differ_from_the_evaluated_ones_are_refused(tmp_path, records):
    report = run_canary(write_module_model(str(tmp_path / "m"), skewed=True), records, FAST)
    assert not report.passed
    assert any(f.startswith("serving_default: top-1 agrees with the evaluated image_only arg "
                            "max on 0% of 6 records") for f in report.failures), report.failures


def test_a_model_that_does_not_load_is_refused(tmp_path, records):
    model = write_module_model(str(tmp_path / "m"))
    with open(os.path.join(model, "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    report = run_canary(model, records, FAST)
    assert not report.passed
    assert report.failures[0].startswith("the candidate did not load in the server: version 1 "
                                         "END: Failed to load version 1"), report.failures


def test_latency_limit(tmp_path, records):
    report = run_canary(write_module_model(str(tmp_path / "m")), records,
                        CanaryLimits(requests_per_signature=3, max_p99_ms=0.001))
    assert not report.passed
    assert any("p99 latency" in f and "> limit 0.0 ms" in f for f in report.failures)


def test_a_signature_with_inputs_the_canary_cannot_build_fails_closed(tmp_path, records):
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="k")])
        def f(self, k):
            return {"out": k}

    model = Model()
    path = str(tmp_path / "k")
    tf.saved_model.save(model, path, signatures={"search": model.f})
    report = run_canary(path, records, FAST)
    assert report.failures == ["search: input 'k' cannot be built from a record (the canary "
                               "builds image, title, tags and examples)"]


def test_agreement_counts_ties_as_agreeing():
    probs = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    assert agreement(np.array([1, 2, 0]), probs) == 1.0
    assert agreement(np.array([0, 0, 0]), probs) == pytest.approx(2 / 3)
    assert agreement(np.array([5, 2, 0]), probs) == 0.0
