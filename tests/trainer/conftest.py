import importlib.util
import os

import pytest


def load_tiny_dataset_module():
    path = os.path.join(os.path.dirname(__file__), "tiny_dataset.py")
    spec = importlib.util.spec_from_file_location("sicot_tests_tiny_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_transform(tmp_path_factory):
    """The real Transform output of a tiny long-tailed dataset (about a minute, once)."""
    root = tmp_path_factory.mktemp("tiny_transform")
    return load_tiny_dataset_module().build(str(root))


@pytest.fixture(scope="session")
def tiny_saved_model(tiny_transform, tmp_path_factory):
    """An (untrained) small SICoT model on the tiny Transform, exported with all signatures:
    for tests of code that runs a SavedModel (batch scoring), not of its accuracy."""
    import tensorflow_transform as tft

    from sicot.trainer.export.saved_model import export_serving_model
    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.transform.output import model_shapes, read_class_counts

    tf_transform_output = tft.TFTransformOutput(tiny_transform.transform_output_dir)
    names, counts = read_class_counts(tf_transform_output)
    image_size, max_tokens, vocab_size = model_shapes(tf_transform_output)
    config = ModelConfig(embedding_dim=16, token_dim=8, attention_rank=4)
    model = build_model(config, len(names), vocab_size, counts, max_tokens, image_size)
    return export_serving_model(model, tf_transform_output,
                                str(tmp_path_factory.mktemp("tiny_saved_model")), top_k=3)
