"""Warm start: weights restored, class and token tables mapped by name, new classes from
their prototypes, unmappable changes refused; and the save / find / load round trip."""
import numpy as np
import pytest

from sicot import contract
from sicot.contract import IMAGE_INPUT, TOKENS_INPUT
from sicot.trainer import warm_start
from sicot.trainer.model.config import ModelConfig
from sicot.trainer.model.sicot_model import build_model

MAX_TOKENS = 4
IMAGE_SIZE = 16  # the Transform's setting: build_model takes it


def _config(**changes):
    settings = dict(embedding_dim=8, token_dim=4, attention_rank=4,
                    word_prediction_weight=0.1)
    settings.update(changes)
    return ModelConfig.preset("sicot").replace(**settings)


def _model(classes, tokens, seed, **changes):
    config = _config(seed=seed, **changes)
    return build_model(config, len(classes), len(tokens) + contract.FIRST_VOCAB_TOKEN_ID,
                       [5] * len(classes), MAX_TOKENS, IMAGE_SIZE)


def _batches(labels, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (len(labels), IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    tokens = rng.integers(0, 5, (len(labels), MAX_TOKENS)).astype("int64")
    return [({IMAGE_INPUT: images, TOKENS_INPUT: tokens}, np.asarray(labels))]


def _weights(model):
    return {w.path.split("/", 1)[-1]: np.asarray(w) for w in model.weights}


def test_classes_and_tokens_are_mapped_by_name_and_new_classes_get_prototypes():
    old_classes, old_tokens = ["a", "b", "c"], ["red", "box", "sale"]
    new_classes, new_tokens = ["b", "a", "d"], ["sale", "new", "red"]  # c dropped, d new
    old = _model(old_classes, old_tokens, seed=0)
    new = _model(new_classes, new_tokens, seed=1)
    batches = _batches([0, 1, 2, 2, 1])
    report = warm_start.warm_start(new, old, old_classes, old_tokens, new_classes, new_tokens,
                                   batches)
    assert report["kept_classes"] == 2 and report["new_classes"] == ["d"]
    assert report["dropped_classes"] == ["c"]
    assert report["kept_tokens"] == 2 and report["new_tokens"] == 1
    before, after = _weights(old), _weights(new)
    # everything that does not depend on classes or tokens is the base model's
    for key in before:
        kind, _ = warm_start._table_kind(key)
        if kind is None:
            np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    # class rows follow the names: new id 0 is b (old id 1), new id 1 is a (old id 0)
    for head in warm_start.CLASS_TABLES:
        np.testing.assert_array_equal(after[f"{head}/kernel"][:, :2],
                                      before[f"{head}/kernel"][:, [1, 0]])
        np.testing.assert_array_equal(after[f"{head}/bias"][:2], before[f"{head}/bias"][[1, 0]])
        assert after[f"{head}/bias"][2] == pytest.approx(before[f"{head}/bias"][[0, 1]].mean())
    # d's visual row points along the mean embedding of d's images (ids 2), kept-row norm
    outputs = new({IMAGE_INPUT: batches[0][0][IMAGE_INPUT],
                   TOKENS_INPUT: batches[0][0][TOKENS_INPUT]}, training=False)
    mean_d = np.asarray(outputs["embedding"])[[2, 3]].mean(0)
    row = after["visual_head/kernel"][:, 2]
    cosine = row @ mean_d / (np.linalg.norm(row) * np.linalg.norm(mean_d))
    assert cosine == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(row) == pytest.approx(
        np.linalg.norm(before["visual_head/kernel"][:, :2], axis=0).mean(), rel=1e-5)
    # token rows follow the strings; ids 0 (padding) and 1 (OOV) map to themselves
    emb_old = before["word_attention/embedding/embeddings"]
    emb_new = after["word_attention/embedding/embeddings"]
    first = contract.FIRST_VOCAB_TOKEN_ID
    np.testing.assert_array_equal(emb_new[:first], emb_old[:first])
    np.testing.assert_array_equal(emb_new[first + 0], emb_old[first + 2])  # sale
    np.testing.assert_array_equal(emb_new[first + 2], emb_old[first + 0])  # red
    np.testing.assert_array_equal(after["word_predictor/kernel"][:, first + 2],
                                  before["word_predictor/kernel"][:, first + 0])


def test_an_unmappable_change_is_a_clear_error():
    classes, tokens = ["a", "b"], ["x"]
    old = _model(classes, tokens, seed=0)
    wider = build_model(_config(embedding_dim=16), 2, 3, [5, 5], MAX_TOKENS, IMAGE_SIZE)
    with pytest.raises(ValueError, match="the base model has embedding_dim=8, this run "
                                         "embedding_dim=16"):
        warm_start.warm_start(wider, old, classes, tokens, classes, tokens, _batches([0, 1]))
    visual_only = ModelConfig.preset("ce").replace(embedding_dim=8)
    with pytest.raises(ValueError, match="model_type='sicot', this run model_type='ce'"):
        warm_start.check_compatible(old.config, visual_only.to_dict(), "base")
    with pytest.raises(ValueError, match="backbone='small', this run backbone='resnet50'"):
        warm_start.check_compatible(old.config, _config(backbone="resnet50").to_dict(), "base")


def test_save_find_and_load_round_trip(tmp_path):
    classes, tokens = ["a", "b"], ["x", "y"]
    model = _model(classes, tokens, seed=3)
    serving = str(tmp_path / "model" / "Format-Serving")
    folder = warm_start.save_for_warm_start(model, classes, tokens, serving)
    assert folder == str(tmp_path / "model" / warm_start.WARM_START_DIR)
    assert warm_start.find_base_model(serving) == folder  # TFX passes the serving folder
    loaded, loaded_classes, loaded_tokens = warm_start.load_base_model(serving)
    assert (loaded_classes, loaded_tokens) == (classes, tokens)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="no model.keras"):
        warm_start.find_base_model(str(tmp_path / "nothing"))
