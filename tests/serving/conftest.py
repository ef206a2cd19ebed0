"""Fixtures for the serving tests: SavedModels in TF Serving's layout and running servers.

Two models:
  * `sicot_base_path`: a real SICoT model (sicot.trainer.model.sicot_model.SICoTModel + the tf.Transform
    graph from sicot.trainer.transform.run_local, exported by sicot.trainer.export.saved_model) trained for a few
    steps on a tiny synthetic set. The end-to-end tests run against it.
  * `write_fixture_model`: a small independent tf.Module with the same signature names, inputs
    and outputs, that decodes the image and computes its class scores from the mean pixel colour
    and the text length. Its `seed` changes the weights, so two versions answer differently; the
    version-swap, corrupt-version and batching tests use it because it loads in about a second.
"""
from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

from sicot.serving.batching import BatchingOptions
from sicot.serving.server import ModelServer, ServerOptions

FIXTURE_CLASSES = ["red_mug", "green_lamp", "blue_shoe", "white_sock", "black_bag", "grey_hat"]
FIXTURE_TOP_K = 3


def encode_image(rgb, size=(24, 20), fmt="JPEG") -> bytes:
    """A solid-colour image with a little gradient, encoded as JPEG or PNG bytes."""
    from PIL import Image

    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:] = rgb
    pixels[:, :, 0] = np.clip(pixels[:, :, 0].astype(int) + np.arange(w)[None, :] % 7, 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_fixture_model(export_dir: str, seed: int = 0) -> str:
    """Writes the fixture SavedModel (signatures serving_default, serving_image_text, serving_examples)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(4, len(FIXTURE_CLASSES))).astype(np.float32)
    bias = rng.normal(size=(len(FIXTURE_CLASSES),)).astype(np.float32)

    class FixtureModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = tf.Variable(weights)
            self.bias = tf.Variable(bias)
            self.classes = tf.constant(FIXTURE_CLASSES)

        def _predict(self, image, title, tags):
            def mean_colour(data):
                pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
                pixels = tf.image.resize(tf.cast(pixels, tf.float32), [8, 8])
                return tf.reduce_mean(pixels, axis=[0, 1]) / 255.0

            colour = tf.map_fn(mean_colour, image, fn_output_signature=tf.TensorSpec([3], tf.float32))
            text = tf.cast(tf.strings.length(title) + tf.strings.length(tags), tf.float32)[:, None] / 50.0
            embedding = tf.concat([colour, text], axis=1)
            probs = tf.nn.softmax(embedding @ self.weights + self.bias, axis=-1)
            scores, ids = tf.math.top_k(probs, k=FIXTURE_TOP_K)
            return {"classes": tf.gather(self.classes, ids), "class_ids": tf.cast(ids, tf.int64),
                    "scores": scores, "embedding": embedding}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image")])
        def serve_image(self, image):
            empty = tf.fill(tf.shape(image), "")
            return self._predict(image, empty, empty)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image"),
                                      tf.TensorSpec([None], tf.string, name="title"),
                                      tf.TensorSpec([None], tf.string, name="tags")])
        def serve_image_text(self, image, title, tags):
            return self._predict(image, title, tags)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_examples(self, examples):
            spec = {k: tf.io.FixedLenFeature([], tf.string, default_value="")
                    for k in ("image", "title", "tags")}
            parsed = tf.io.parse_example(examples, spec)
            return self._predict(parsed["image"], parsed["title"], parsed["tags"])

    module = FixtureModel()
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.serve_image,
        "serving_image_text": module.serve_image_text,
        "serving_examples": module.serve_examples,
    })
    return export_dir


def push_version(saved_model_dir: str, base_path: str, version: int) -> str:
    """Copies a SavedModel into base_path/<version> the way TFX's Pusher does: everything into a
    temporary directory first, `saved_model.pb` last, then a rename into place."""
    os.makedirs(base_path, exist_ok=True)
    staging = os.path.join(base_path, f".tmp-{version}")
    shutil.copytree(saved_model_dir, staging, ignore=shutil.ignore_patterns("saved_model.pb"))
    shutil.copy2(os.path.join(saved_model_dir, "saved_model.pb"), os.path.join(staging, "saved_model.pb"))
    final = os.path.join(base_path, str(version))
    os.rename(staging, final)
    return final


@pytest.fixture(scope="session")
def fixture_saved_models(tmp_path_factory):
    """Two fixture SavedModels (seeds 0 and 1), written once per session."""
    root = tmp_path_factory.mktemp("fixture_models")
    return {seed: write_fixture_model(str(root / f"seed{seed}"), seed=seed) for seed in (0, 1)}


@pytest.fixture()
def fixture_base_path(tmp_path, fixture_saved_models):
    """A base path holding version 1 of the fixture model."""
    base = str(tmp_path / "fixture")
    push_version(fixture_saved_models[0], base, 1)
    return base


def start_server(base_path: str, model_name: str = "sicot", **kwargs) -> ModelServer:
    options = ServerOptions(model_name=model_name, model_base_path=base_path, grpc_port=0, rest_port=0,
                            **kwargs)
    return ModelServer(options).start()


@pytest.fixture(name="push_version")
def push_version_fixture():
    """The Pusher-like copy, as a fixture (test modules cannot import conftest)."""
    return push_version


@pytest.fixture()
def server_factory():
    """`server_factory(base_path, **ServerOptions fields)` starts a server, stopped after the test."""
    servers = []

    def factory(base_path, **kwargs):
        servers.append(start_server(base_path, **kwargs))
        return servers[-1]

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture()
def fixture_server(fixture_base_path):
    server = start_server(fixture_base_path, poll_seconds=0.2)
    yield server
    server.stop()


@pytest.fixture()
def batching_server(fixture_base_path):
    server = start_server(fixture_base_path, poll_seconds=0,
                          batching=BatchingOptions(max_batch_size=16, batch_timeout_micros=200_000))
    yield server
    server.stop()


# -- the real SICoT model ---------------------------------------------------------------------
def _load_tiny_dataset():
    """tests/trainer/tiny_dataset.py, loaded by path (tests run with --import-mode=importlib)."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "trainer", "tiny_dataset.py")
    spec = importlib.util.spec_from_file_location("sicot_tests_tiny_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_tiny_sicot_model(root: str, top_k: int = 3) -> str:
    """Runs the real Transform on the tiny long-tailed set, builds a small SICoTModel (untrained:
    serving only needs its graph and weights) and exports it with sicot.trainer.export.saved_model."""
    import tensorflow_transform as tft

    from sicot.trainer.export.saved_model import export_serving_model
    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.transform.output import model_shapes, read_class_counts

    result = _load_tiny_dataset().build(os.path.join(root, "data"))
    tf_transform_output = tft.TFTransformOutput(result.transform_output_dir)
    names, counts = read_class_counts(tf_transform_output)
    image_size, max_tokens, vocab_size = model_shapes(tf_transform_output)
    config = ModelConfig(embedding_dim=16, token_dim=8, attention_rank=4)
    model = build_model(config, len(names), vocab_size, counts, max_tokens, image_size)
    return export_serving_model(model, tf_transform_output, os.path.join(root, "export"), top_k=top_k)


@pytest.fixture(scope="session")
def sicot_export_dir(tmp_path_factory):
    """A real SICoT SavedModel (about 45 s to build on 2 CPUs, once per session)."""
    return export_tiny_sicot_model(str(tmp_path_factory.mktemp("sicot_model")))


@pytest.fixture(scope="session")
def sicot_base_path(tmp_path_factory, sicot_export_dir):
    """A base path holding version 1 of the real SICoT export."""
    base = str(tmp_path_factory.mktemp("sicot_base") / "sicot")
    push_version(sicot_export_dir, base, 1)
    return base


@pytest.fixture(scope="session")
def sicot_server(sicot_base_path):
    """A server on the real SICoT model, shared by the end-to-end tests (no polling)."""
    server = start_server(sicot_base_path, poll_seconds=0, max_request_bytes=1024 * 1024)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sicot_in_process(sicot_export_dir):
    """The same SavedModel loaded in this process: the reference the servers must match."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (ops of the Transform graph)

    return tf.saved_model.load(sicot_export_dir)


@pytest.fixture(scope="session")
def images():
    return {
        "red_jpeg": encode_image((220, 30, 30)),
        "green_png": encode_image((30, 200, 40), fmt="PNG"),
        "blue_jpeg": encode_image((20, 40, 230), size=(40, 32)),
    }
