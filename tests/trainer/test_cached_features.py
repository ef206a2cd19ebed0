"""Training over a frozen backbone's cached features (`trainer/cached_features.py`) and the
efficientnet_lite0 tower in `run_fn`: the feature path computes what the image path computes,
epochs are exact permutations (or fresh balanced draws), the disk cache is keyed by the weights,
and a frozen ImageNet backbone stays exactly as loaded while the projection and heads learn."""
import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from sicot import contract
from sicot.trainer import cached_features
from sicot.trainer.cached_features import CachedSplit, feature_dataset
from sicot.trainer.model.sicot_model import FEATURES_INPUT


def _split(n=40, classes=4, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(c, k) for k, c in enumerate([n - (classes - 1)]
                                                                  + [1] * (classes - 1))])
    return CachedSplit(rng.normal(size=(n, dim)).astype("float32"),
                       np.arange(n * 2, dtype="int32").reshape(n, 2),
                       labels.astype("int32"), 0.0)


def _epochs(ds, steps, count):
    it = iter(ds)
    return [[next(it) for _ in range(steps)] for _ in range(count)]


def test_training_epochs_are_fresh_permutations_of_the_split():
    split = _split()
    ds = feature_dataset(split, 8, training=True, seed=3)
    seen = []
    for epoch in _epochs(ds, 5, 3):
        tokens = np.concatenate([x[contract.TOKENS_INPUT].numpy()[:, 0] for x, _ in epoch])
        # every example exactly once per epoch, features/tokens/labels kept together
        assert sorted(tokens // 2) == list(range(len(split)))
        for x, y in epoch:
            rows = x[contract.TOKENS_INPUT].numpy()[:, 0] // 2
            np.testing.assert_array_equal(x[FEATURES_INPUT].numpy(), split.features[rows])
            np.testing.assert_array_equal(y.numpy(), split.labels[rows])
        seen.append(tuple(tokens))
    assert len(set(seen)) == 3  # reshuffled every epoch


def test_balanced_sampling_draws_classes_evenly_and_anew():
    split = _split(n=400, classes=4)
    counts = np.bincount(split.labels)
    ds = feature_dataset(split, 100, training=True, seed=1, balanced_sampling=True,
                         class_counts=counts)
    labels = np.concatenate([y.numpy() for epoch in _epochs(ds, 20, 1) for _, y in epoch])
    shares = np.bincount(labels, minlength=4) / len(labels)
    np.testing.assert_allclose(shares, 0.25, atol=0.05)  # head class 391 images, tail 1 each
    with pytest.raises(ValueError, match="class_counts"):
        feature_dataset(split, 8, training=True, balanced_sampling=True)


def test_a_split_of_unequal_parts_is_refused():
    split = _split(n=10)
    with pytest.raises(ValueError, match="9 labels"):
        CachedSplit(split.features, split.tokens, split.labels[:9], 0.0)


def test_evaluation_pass_keeps_record_order_and_declares_its_size():
    split = _split(n=19)
    ds = feature_dataset(split, 8, training=False)
    assert int(ds.cardinality()) == 3
    labels = np.concatenate([y.numpy() for _, y in ds])
    np.testing.assert_array_equal(labels, split.labels)


@pytest.fixture(scope="module")
def lite_tower():
    from sicot.trainer.backbones.imagenet_weights import load_imagenet_weights
    from sicot.trainer.model.visual_tower import VisualTower

    tower = VisualTower("efficientnet_lite0", embedding_dim=8, frozen_bn=True)
    tower.build((None, 32, 32, 3))
    load_imagenet_weights(tower.efficientnet)
    return tower


def test_the_feature_path_embeds_as_the_image_path(lite_tower):
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    features = lite_tower.features(images)
    assert features.shape == (3, lite_tower.feature_dim)
    np.testing.assert_allclose(np.asarray(lite_tower.embed(features)),
                               np.asarray(lite_tower(images)), rtol=1e-5, atol=1e-5)
    # frozen_bn: training=True still uses the loaded statistics
    np.testing.assert_allclose(np.asarray(lite_tower.features(images, training=True)),
                               np.asarray(features), rtol=1e-5, atol=1e-5)


def test_disk_cache_is_reused_for_the_same_weights_only(lite_tower, tiny_transform, tmp_path):
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(tiny_transform.transform_output_dir)
    files = tiny_transform.transformed_files["train"]
    first = cached_features.extract(lite_tower, files, output, image_size=32,
                                    cache_dir=str(tmp_path))
    cached = os.listdir(tmp_path)
    assert len(cached) == 1 and cached[0].endswith(".npz")
    again = cached_features.extract(lite_tower, files, output, image_size=32,
                                    cache_dir=str(tmp_path))
    np.testing.assert_array_equal(first.features, again.features)
    np.testing.assert_array_equal(first.labels, again.labels)
    # A torn cache file is recomputed, not trusted.
    with open(tmp_path / cached[0], "wb") as f:
        f.write(b"torn")
    repaired = cached_features.extract(lite_tower, files, output, image_size=32,
                                       cache_dir=str(tmp_path))
    np.testing.assert_allclose(repaired.features, first.features, rtol=1e-5, atol=1e-5)
    # Other weights: another key, another file.
    from sicot.trainer.model.visual_tower import VisualTower

    other = VisualTower("efficientnet_lite0", embedding_dim=8)
    other.build((None, 32, 32, 3))
    assert (cached_features.cache_key(other, [files], 32)
            != cached_features.cache_key(lite_tower, [files], 32))
    assert (cached_features.cache_key(lite_tower, [files], 64)
            != cached_features.cache_key(lite_tower, [files], 32))


def _fn_args(tiny_transform, tmp_path, name, eval_files=True, **model):
    from tfx.v1.components import FnArgs

    model = {"preset": "sicot", "backbone": "efficientnet_lite0", "epochs": 2,
             "embedding_dim": 16, "token_dim": 8, "attention_rank": 4, "batch_size": 8,
             "crt_epochs": 1, **model}
    return FnArgs(train_files=[tiny_transform.transformed_files["train"]],
                  eval_files=[tiny_transform.transformed_files["eval"]] if eval_files else None,
                  transform_output=tiny_transform.transform_output_dir,
                  transform_graph_path=tiny_transform.transform_output_dir,
                  serving_model_dir=str(tmp_path / name / "serving"),
                  model_run_dir=str(tmp_path / name / "run"), train_steps=None, eval_steps=None,
                  custom_config={"model": model,
                                 "feature_cache_dir": str(tmp_path / "feature_cache")})


def _backbone(model):
    return [np.asarray(w) for w in model.visual_tower.efficientnet.weights]


def test_frozen_bn_keeps_the_loaded_statistics_in_training(lite_tower):
    from sicot.trainer.model.visual_tower import VisualTower

    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    for frozen_bn, stats_move in ((True, False), (False, True)):
        tower = VisualTower("efficientnet_lite0", embedding_dim=8, frozen_bn=frozen_bn)
        tower.build((None, 32, 32, 3))
        for w, loaded in zip(tower.weights, lite_tower.weights, strict=True):
            w.assign(loaded)
        before = [np.asarray(w) for w in tower.efficientnet.weights]
        tower(images, training=True)
        moved = [not np.array_equal(np.asarray(w), b)
                 for w, b in zip(tower.efficientnet.weights, before) if "moving" in w.path]
        assert any(moved) == stats_move, frozen_bn


def test_run_fn_trains_over_cached_features_then_fine_tunes(lite_tower, tiny_transform,
                                                            tmp_path):
    """sicot, 1 frozen epoch over cached features + 1 fine-tuning epoch + cRT stage 2 over
    features cached anew: the backbone's kernels moved in fine-tuning while its BN statistics
    stayed the ImageNet ones (pretrained_bn='frozen'); the projection learned; the features
    were cached on disk for the loaded backbone (train + eval) and for the fine-tuned one."""
    import json

    import tensorflow_transform as tft

    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.transform.output import model_shapes
    from sicot.trainer.task import run_fn

    model = run_fn(_fn_args(tiny_transform, tmp_path, "tuned", backbone_frozen_epochs=1))
    moved = collections.defaultdict(list)
    for w, start in zip(model.visual_tower.efficientnet.weights,
                        lite_tower.efficientnet.weights, strict=True):
        kind = "stats" if "moving" in w.path else "kernel"
        moved[kind].append(not np.array_equal(np.asarray(w), np.asarray(start)))
    assert any(moved["kernel"]) and not any(moved["stats"])
    image_size, max_tokens, _ = model_shapes(
        tft.TFTransformOutput(tiny_transform.transform_output_dir))
    init = build_model(ModelConfig.from_dict(model.config), model.num_classes,
                       model.vocab_size, model.class_counts, max_tokens, image_size)
    ones = np.ones((1, model.visual_tower.feature_dim), "float32")
    assert not np.allclose(np.asarray(model.visual_tower.embed(ones)),
                           np.asarray(init.visual_tower.embed(ones)))
    with open(tmp_path / "tuned" / "run" / "history.json") as f:
        history = json.load(f)["history"]
    assert history["feature_cache_seconds"] > 0
    assert len(os.listdir(tmp_path / "feature_cache")) == 4
    assert history["loss"][-1] < history["loss"][0]
    loaded = tf.saved_model.load(str(tmp_path / "tuned" / "serving"))
    assert "serving_default" in loaded.signatures
