"""Layer contract (config == __init__ args, round trip) and behaviour of each layer."""
import inspect

import keras
import numpy as np
import pytest

from sicot.trainer.model.bilinear_word_attention import BilinearWordAttention
from sicot.trainer.model.classifier_head import ClassifierHead
from sicot.trainer.model.visual_tower import VisualTower

LAYERS = [
    (VisualTower, dict(backbone="small", embedding_dim=8, stage_widths=(4, 8), dropout=0.1,
                       stem_stride=1),
     lambda: (np.random.rand(2, 16, 16, 3).astype("float32") * 255,)),
    (BilinearWordAttention, dict(vocab_size=12, token_dim=6, rank=3, output_dim=5,
                                 use_attention=True),
     lambda: (np.random.rand(2, 7).astype("float32"), np.array([[2, 3, 0, 0], [5, 0, 0, 0]]))),
    (ClassifierHead, dict(num_classes=4, classifier_type="cosine", scale=10.0, learn_scale=False),
     lambda: (np.random.rand(3, 5).astype("float32"),)),
]


@pytest.mark.parametrize("cls, kwargs, inputs", LAYERS)
def test_get_config_keys_are_exactly_the_init_arguments(cls, kwargs, inputs):
    layer = cls(**kwargs)
    init_args = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    base_keys = set(keras.layers.Layer().get_config())
    assert set(layer.get_config()) - base_keys == init_args
    for key, value in kwargs.items():
        got = layer.get_config()[key]
        assert (list(got) if isinstance(value, tuple) else got) == (
            list(value) if isinstance(value, tuple) else value)


@pytest.mark.parametrize("cls, kwargs, inputs", LAYERS)
def test_from_config_round_trip_gives_equal_outputs(cls, kwargs, inputs):
    args = inputs()
    layer = cls(**kwargs)
    out = layer(*args)
    clone = cls.from_config(layer.get_config())
    clone(*args)
    clone.set_weights(layer.get_weights())
    for a, b in zip(keras.tree.flatten(out), keras.tree.flatten(clone(*args))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls, kwargs", [
    (VisualTower, dict(backbone="vgg")), (VisualTower, dict(embedding_dim=0)),
    (BilinearWordAttention, dict(vocab_size=0)), (ClassifierHead, dict(num_classes=3,
                                                                       classifier_type="mlp"))])
def test_invalid_arguments_are_rejected_with_the_value(cls, kwargs):
    with pytest.raises(ValueError, match=repr(list(kwargs.values())[-1]).strip("'")):
        cls(**kwargs)


def test_visual_tower_shapes_small_and_resnet50():
    x = np.random.rand(2, 32, 32, 3).astype("float32") * 255
    assert VisualTower("small", 12, stage_widths=(4, 8, 16))(x).shape == (2, 12)
    tower = VisualTower("resnet50", 12)
    assert tower(x).shape == (2, 12)
    assert len(tower.trainable_weights) > 100  # the whole ResNet50 is trained


def _attention(use_attention=True):
    layer = BilinearWordAttention(vocab_size=10, token_dim=4, rank=3, output_dim=5,
                                  use_attention=use_attention)
    visual = np.random.RandomState(0).randn(3, 6).astype("float32")
    tokens = np.array([[2, 3, 4, 0, 0], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    return layer, visual, tokens


def test_attention_ignores_padding_and_sums_to_one():
    layer, visual, tokens = _attention()
    s, a = layer(visual, tokens)
    a = np.asarray(a)
    assert s.shape == (3, 5) and a.shape == (3, 5)
    assert (a[tokens == 0] == 0).all()
    np.testing.assert_allclose(a[:2].sum(-1), 1.0, rtol=1e-6)
    assert (a[0, :3] > 0).all()


def test_empty_text_gives_zero_semantic_and_finite_gradients():
    import tensorflow as tf

    layer, visual, tokens = _attention()
    v = tf.Variable(visual)
    with tf.GradientTape() as tape:
        s, a = layer(v, tokens)
        loss = tf.reduce_sum(s ** 2) + tf.reduce_sum(a)
    grads = tape.gradient(loss, [v] + layer.trainable_variables)
    assert np.all(np.asarray(s)[2] == 0) and np.all(np.asarray(a)[2] == 0)
    assert all(np.isfinite(np.asarray(g if not hasattr(g, "values") else g.values)).all()
               for g in grads if g is not None)


def test_attention_matches_numpy_reference():
    layer, visual, tokens = _attention()
    s, a = layer(visual, tokens)
    e = np.asarray(layer._embedding.embeddings)[tokens]  # [B, T, E]
    u = np.asarray(layer._visual_query.kernel)
    w = np.asarray(layer._word_key.kernel)
    p, pb = np.asarray(layer._word_value.kernel), np.asarray(layer._word_value.bias)
    scores = np.einsum("br,btr->bt", visual @ u, e @ w) / np.sqrt(3)
    mask = tokens != 0
    for b in range(2):
        z = np.exp(scores[b][mask[b]] - scores[b][mask[b]].max())
        ref = z / z.sum()
        np.testing.assert_allclose(np.asarray(a)[b][mask[b]], ref, rtol=1e-5)
        ref_s = (ref[:, None] * (e[b][mask[b]] @ p + pb)).sum(0)
        np.testing.assert_allclose(np.asarray(s)[b], ref_s, rtol=1e-4, atol=1e-6)


def test_attention_depends_on_the_image():
    layer, visual, tokens = _attention()
    _, a1 = layer(visual, tokens)
    _, a2 = layer(-visual, tokens)
    assert not np.allclose(np.asarray(a1)[0], np.asarray(a2)[0])


def test_mean_pooling_ablation_is_uniform_over_words():
    layer, visual, tokens = _attention(use_attention=False)
    _, a = layer(visual, tokens)
    np.testing.assert_allclose(np.asarray(a)[0], [1 / 3, 1 / 3, 1 / 3, 0, 0], rtol=1e-6)
    _, a2 = layer(-visual, tokens)
    np.testing.assert_allclose(np.asarray(a), np.asarray(a2))


def test_cosine_head_is_bounded_by_its_scale_and_linear_head_is_affine():
    x = np.random.RandomState(1).randn(4, 6).astype("float32") * 50
    cos = ClassifierHead(3, "cosine", scale=10.0, learn_scale=False)
    logits = np.asarray(cos(x))
    assert np.abs(logits).max() <= 10.0 + 1e-4
    assert len(cos.trainable_weights) == 1  # fixed scale is not trained
    lin = ClassifierHead(3, "linear")
    out = np.asarray(lin(x))
    np.testing.assert_allclose(out, x @ np.asarray(lin.kernel) + np.asarray(lin.bias), rtol=1e-5)
