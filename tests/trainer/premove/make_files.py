"""Writes the model files that `test_premove_models.py` loads: what a SICoT main wrote before
`trainer/` was split into sub-packages (issue 24), kept in this folder as checked-in files.

    .venv/bin/python tests/trainer/premove/make_files.py tests/trainer/premove/files

Run once at commit b1f35cd (the last commit with the flat `trainer/`); its imports were then
moved with the code, so running it again writes the same kind of files from the current code.
Writes:
  sicot.keras       a small `SICoTModel` (sicot preset, `small` tower), compiled, as `task.run_fn`
                    saves `run/model.keras`;
  sampled.keras     the same with sampled heads (`SampledClassifierHead`) and the
                    `SparseCentreAdamW` optimizer;
  enrolled.keras    an `EnrolledSICoTModel` on it (2 enrolled classes, visual head on the same
                    footing), as `sicot enroll` saves it;
  efficientnet.json the serialized config (no weights) of a `SICoTModel` whose tower is
                    `efficientnet_lite0`;
  saved_model/      `export_serving_model` of sicot.keras over the tiny Transform;
  examples.tfrecord 3 raw tf.Examples for the serving signature;
  expected.npz      inputs and what each model answered to them (no pickled objects).
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _tiny_dataset():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sicot_tests_tiny_dataset", os.path.join(HERE, "..", "tiny_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(out_dir: str) -> None:
    import tempfile

    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from sicot import contract
    from sicot.trainer.model.enrolled_sicot_model import EnrolledSICoTModel
    from sicot.trainer.export.saved_model import export_serving_model
    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.task import make_optimizer
    from sicot.trainer.transform.output import model_shapes, read_class_counts

    os.makedirs(out_dir, exist_ok=True)
    tiny = _tiny_dataset()
    transform = tiny.build(tempfile.mkdtemp(prefix="premove-"))
    tfo = tft.TFTransformOutput(transform.transform_output_dir)
    names, counts = read_class_counts(tfo)
    image_size, max_tokens, vocab_size = model_shapes(tfo)
    config = ModelConfig(embedding_dim=16, token_dim=8, attention_rank=4, seed=3)

    rng = np.random.default_rng(0)
    inputs = {contract.IMAGE_INPUT: rng.integers(0, 256, (3, image_size, image_size, 3))
              .astype("float32"),
              contract.TOKENS_INPUT: rng.integers(0, vocab_size, (3, max_tokens)).astype("int64")}
    expected = {f"input.{k}": v for k, v in inputs.items()}

    def record(name, model):
        model.save(os.path.join(out_dir, f"{name}.keras"))
        for key, value in model(inputs, training=False).items():
            expected[f"{name}.{key}"] = keras.ops.convert_to_numpy(value)

    model = build_model(config, len(names), vocab_size, counts, max_tokens, image_size)
    model.compile(optimizer=make_optimizer(config, 10))
    record("sicot", model)

    sampled = build_model(config.replace(sampled_classifier_min_classes=2), len(names),
                          vocab_size, counts, max_tokens, image_size)
    sampled.compile(optimizer=make_optimizer(config, 10, sampled=True))
    record("sampled", sampled)

    enrolled = EnrolledSICoTModel(model, 2, same_footing=("visual",))
    enrolled.build(None)
    for variable in enrolled.trainable_variables + enrolled.non_trainable_variables:
        if "enrolled" in variable.path or "trained" in variable.path:
            variable.assign(rng.normal(0, 1, variable.shape).astype(variable.dtype))
    record("enrolled", enrolled)

    tower = build_model(config.replace(backbone="efficientnet_lite0", backbone_weights="none"),
                        len(names), vocab_size, counts, max_tokens, 32)
    with open(os.path.join(out_dir, "efficientnet.json"), "w") as f:
        json.dump(keras.saving.serialize_keras_object(tower), f, indent=1, sort_keys=True)

    saved = export_serving_model(model, tfo, os.path.join(out_dir, "saved_model"), top_k=3)
    examples = tiny.make_examples([1, 1, 1], seed=11)
    with tf.io.TFRecordWriter(os.path.join(out_dir, "examples.tfrecord")) as writer:
        for example in examples:
            writer.write(example)
    served = tf.saved_model.load(saved).signatures[contract.EXAMPLES_SIGNATURE](
        **{contract.EXAMPLES_INPUT: tf.constant(examples)})
    for key, value in served.items():
        value = value.numpy()
        expected[f"served.{key}"] = (np.char.decode(value.astype(bytes), "utf-8")
                                     if value.dtype == object else value)
    np.savez(os.path.join(out_dir, "expected.npz"), **expected)


if __name__ == "__main__":
    main(sys.argv[1])
