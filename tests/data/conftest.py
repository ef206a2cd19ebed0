"""Small synthetic data sets shared by the data tests (generated once per session)."""
import pytest

from sicot.data import synth

# Small enough to render in a few seconds: 24 classes, 40 down to 2 training images.
SMALL = synth.SynthConfig(classes=24, imbalance=20, max_per_class=40, eval_per_class=1,
                          test_per_class=2, image_size=32, seed=3)


@pytest.fixture(scope="session")
def small_config():
    return SMALL


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("small_synth")
    synth.generate(SMALL, out, progress=False, log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def default_text_only(tmp_path_factory):
    """The default data set's manifests and class table, without images (same text)."""
    out = tmp_path_factory.mktemp("default_text")
    synth.generate(synth.SynthConfig(metadata_only=True), out, progress=False, log=lambda *_: None)
    return out
