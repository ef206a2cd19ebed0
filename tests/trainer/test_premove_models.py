"""Model files written by the flat `trainer/` of commit b1f35cd (before the sub-packages of
issue 24) load and answer the same with today's code: `.keras` files (as `run/model.keras`,
`sicot enroll` and warm start save them), a serialized efficientnet_lite0 model, and the
exported SavedModel. `premove/make_files.py` wrote them; see its docstring."""
import json
import os

import numpy as np
import pytest

FILES = os.path.join(os.path.dirname(__file__), "premove", "files")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FILES, "expected.npz")) as data:
        return dict(data)


def _inputs(expected):
    return {k[len("input."):]: v for k, v in expected.items() if k.startswith("input.")}


@pytest.mark.parametrize("name", ["sicot", "sampled", "enrolled"])
def test_keras_file_written_before_the_move_loads_and_predicts_the_same(name, expected):
    import keras

    from sicot.trainer.model import enrolled_sicot_model  # noqa: F401 (sicot>)
    from sicot.trainer import sparse_centre_adamw

    model = keras.saving.load_model(os.path.join(FILES, f"{name}.keras"))
    outputs = model(_inputs(expected), training=False)
    keys = sorted(k[len(name) + 1:] for k in expected if k.startswith(name + "."))
    assert sorted(outputs) == keys
    for key in keys:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs[key]),
                                   expected[f"{name}.{key}"], rtol=1e-5, atol=1e-5,
                                   err_msg=f"{name}.keras output {key}")


def test_serialized_efficientnet_model_rebuilds_the_same():
    import keras

    from sicot.trainer.model import sicot_model  # noqa: F401  (registers the sicot> classes)

    with open(os.path.join(FILES, "efficientnet.json")) as f:
        config = json.load(f)
    model = keras.saving.deserialize_keras_object(config)
    again = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    assert again["config"] == config["config"]
    assert model.model_config.backbone == "efficientnet_lite0"


def test_saved_model_written_before_the_move_serves_the_same(expected):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the Transform graph's ops)

    from sicot import contract

    examples = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(FILES, "examples.tfrecord"))]
    served = tf.saved_model.load(os.path.join(FILES, "saved_model")).signatures[
        contract.EXAMPLES_SIGNATURE](**{contract.EXAMPLES_INPUT: tf.constant(examples)})
    keys = sorted(k[len("served."):] for k in expected if k.startswith("served."))
    assert sorted(served) == keys
    for key in keys:
        value, want = served[key].numpy(), expected[f"served.{key}"]
        if want.dtype.kind == "U":
            assert np.char.decode(value.astype(bytes), "utf-8").tolist() == want.tolist(), key
        else:
            np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5, err_msg=key)
