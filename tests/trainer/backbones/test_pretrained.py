"""`--backbone-weights`: round trips (own tower file, keras.applications ResNet-50 file), the
mismatch errors naming the first mismatching layer, and the frozen first epochs in `run_fn`.

Every weights file is written here (no downloads): the ResNet-50 file with Keras' own writer
of the legacy HDF5 layout that keras.applications ships its ImageNet files in.
"""
import h5py
import keras
import numpy as np
import pytest

from sicot.trainer.backbones.pretrained import TOWER_WEIGHTS_FILE, load_backbone_weights, save_tower_weights
from sicot.trainer.model.visual_tower import VisualTower


def _tower(backbone="small", seed=0, size=32, **kwargs):
    keras.utils.set_random_seed(seed)
    kwargs.setdefault("embedding_dim", 16)
    if backbone == "small":
        kwargs.setdefault("stage_widths", (8, 16))
    tower = VisualTower(backbone, name="visual_tower", **kwargs)
    tower.build((None, size, size, 3))
    return tower


def _images(size=32, n=3):
    return np.random.default_rng(1).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("folder", ["local", "ram://backbone_test"])
def test_small_tower_round_trip_gives_the_same_outputs(tmp_path, folder):
    source, target = _tower(seed=0), _tower(seed=1)
    images = _images()
    assert not np.allclose(source(images), target(images))
    base = str(tmp_path) if folder == "local" else folder  # ram:// is a non-local gfile scheme
    path = f"{base}/{TOWER_WEIGHTS_FILE}"
    save_tower_weights(source, path)
    assert load_backbone_weights(target, path) == "visual_tower"
    np.testing.assert_allclose(target(images), source(images), rtol=1e-6, atol=1e-6)
    for a, b in zip(source.weights, target.weights):  # BN moving statistics included
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_small_tower_mismatch_names_the_first_mismatching_layer(tmp_path):
    path = str(tmp_path / TOWER_WEIGHTS_FILE)
    save_tower_weights(_tower(stage_widths=(8, 16)), path)
    wider = _tower(stage_widths=(8, 32))
    before = [np.asarray(w).copy() for w in wider.weights]
    with pytest.raises(ValueError, match=r"first mismatching layer '[^']*_blocks/[^']*_bn1'"):
        load_backbone_weights(wider, path)
    for w, b in zip(wider.weights, before):  # nothing was half-loaded
        np.testing.assert_array_equal(np.asarray(w), b)
    # A file with more stages than the tower: Keras alone would load the common part silently.
    with pytest.raises(ValueError, match=r"first mismatching layer .*the tower needs no such"):
        load_backbone_weights(_tower(stage_widths=(8,)), path)
    with pytest.raises(ValueError, match=r"_projection"):
        load_backbone_weights(_tower(stage_widths=(8, 16), embedding_dim=8), path)


def test_missing_and_non_hdf5_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_backbone_weights(_tower(), str(tmp_path / "nope.h5"))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 weights file"):
        load_backbone_weights(_tower(), str(bad))


def _applications_file(path, model):
    """The legacy HDF5 layout of keras.applications' downloadable weights files."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def test_resnet50_applications_file_round_trip_and_mismatches(tmp_path):
    keras.utils.set_random_seed(3)
    source = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                         input_shape=(32, 32, 3))
    path = str(tmp_path / "resnet50_notop.h5")
    _applications_file(path, source)

    tower = _tower("resnet50", seed=4)
    images = keras.applications.resnet50.preprocess_input(_images())
    assert not np.allclose(tower.resnet(images), source(images))
    assert load_backbone_weights(tower, path) == "keras.applications"
    np.testing.assert_allclose(tower.resnet(images), source(images), rtol=1e-5, atol=1e-5)

    # The tower of the `small` backbone is refused, naming what fits.
    with pytest.raises(ValueError, match="fits the resnet50 backbone"):
        load_backbone_weights(_tower("small"), path)
    # A ResNet-101 file: the first layer where the two differ is named.
    deeper = keras.applications.ResNet101(weights=None, include_top=False, pooling="avg",
                                          input_shape=(32, 32, 3))
    deeper_path = str(tmp_path / "resnet101_notop.h5")
    _applications_file(deeper_path, deeper)
    with pytest.raises(ValueError, match=r"first mismatching layer 'conv5_block1_1_conv'.*"
                                         r"'conv4_block7_1_conv'"):
        load_backbone_weights(tower, deeper_path)
    # The file with the ImageNet classification top: the extra layer is named.
    top = keras.applications.ResNet50(weights=None, include_top=True, input_shape=(32, 32, 3),
                                      classes=5)
    top_path = str(tmp_path / "resnet50_top.h5")
    _applications_file(top_path, top)
    with pytest.raises(ValueError, match=r"'predictions'.*_notop"):
        load_backbone_weights(tower, top_path)


def test_run_fn_loads_the_weights_and_keeps_the_tower_frozen(tiny_transform, tmp_path):
    """One epoch, all frozen: the trained backbone is exactly the file's (moving statistics
    included, BN in inference mode), while the embedding projection and the head moved; the
    run writes its own tower file."""
    from tfx.v1.components import FnArgs

    from sicot.trainer.task import run_fn

    def fn_args(name, **model):
        model.update(preset="ce", epochs=1, embedding_dim=16, batch_size=8)
        return FnArgs(train_files=[tiny_transform.transformed_files["train"]],
                      eval_files=None, transform_output=tiny_transform.transform_output_dir,
                      transform_graph_path=tiny_transform.transform_output_dir,
                      serving_model_dir=str(tmp_path / name / "serving"),
                      model_run_dir=str(tmp_path / name / "run"), train_steps=4,
                      eval_steps=None, custom_config={"model": model})

    first = run_fn(fn_args("first"))
    weights = str(tmp_path / "first" / "run" / TOWER_WEIGHTS_FILE)
    second = run_fn(fn_args("second", backbone_weights=weights, backbone_frozen_epochs=1,
                            seed=7))
    for layer_a, layer_b in zip(first.visual_tower.backbone_layers(),
                                second.visual_tower.backbone_layers(), strict=True):
        for a, b in zip(layer_a.weights, layer_b.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(first.visual_tower._projection.kernel),
                           np.asarray(second.visual_tower._projection.kernel))
    # The head did train: it is not the initialisation run_fn starts from (same seed).
    import tensorflow_transform as tft

    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.transform.output import model_shapes

    image_size, max_tokens, _ = model_shapes(
        tft.TFTransformOutput(tiny_transform.transform_output_dir))
    init = build_model(ModelConfig.from_dict(second.config), second.num_classes,
                       second.vocab_size, second.class_counts, max_tokens, image_size)
    assert not np.allclose(np.asarray(second.visual_head.kernel),
                           np.asarray(init.visual_head.kernel))
    with pytest.raises(ValueError, match="backbone_frozen_epochs needs backbone_weights"):
        run_fn(fn_args("third", backbone_frozen_epochs=1))
