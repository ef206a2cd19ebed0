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
