"""SampledClassifierHead (Partial FC sampling) and SparseCentreAdamW (row-sparse centre updates)."""
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from sicot.trainer.model import losses as long_tail_losses
from sicot.trainer.model.sampled_classifier_head import SampledClassifierHead
from sicot.trainer.sparse_centre_adamw import SparseCentreAdamW


def built_head(num_classes=50, dim=6, **kwargs):
    head = SampledClassifierHead(num_classes, seed=3, **kwargs)
    head.build((None, dim))
    return head


def test_get_config_keys_are_exactly_the_init_arguments_and_round_trip():
    head = built_head(classifier_type="cosine", negative_share=0.2, scale=8.0)
    init_args = set(inspect.signature(SampledClassifierHead.__init__).parameters) - {
        "self", "kwargs"}
    assert set(head.get_config()) - set(keras.layers.Layer().get_config()) == init_args
    clone = SampledClassifierHead.from_config(head.get_config())
    clone.build((None, 6))
    clone.set_weights(head.get_weights())
    x = np.random.rand(3, 6).astype("float32")
    np.testing.assert_allclose(clone(x), head(x), rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes=0"),
    (dict(num_classes=5, negative_share=0.0), "negative_share=0.0"),
    (dict(num_classes=5, negative_share=1.5), "negative_share=1.5"),
    (dict(num_classes=5, classifier_type="arc"), "classifier_type='arc'"),
    (dict(num_classes=5, scale=-1.0), "scale=-1.0"),
])
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SampledClassifierHead(**kwargs)


def test_full_logits_match_numpy_linear_and_cosine():
    x = np.random.RandomState(0).randn(4, 6).astype("float32")
    head = built_head()
    w, b = head.centres.numpy(), head.bias.numpy()
    np.testing.assert_allclose(head(x), x @ w.T + b, rtol=1e-5, atol=1e-5)
    cos = built_head(classifier_type="cosine", scale=10.0)
    w = cos.centres.numpy()
    expected = 10.0 * (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=1, keepdims=True)).T
    np.testing.assert_allclose(cos(x), expected, rtol=1e-4, atol=1e-4)


def test_sample_holds_every_positive_and_remaps_labels():
    head = built_head(num_classes=1000, negative_share=0.05)
    labels = np.array([3, 3, 7, 999, 500, 1000, -1])  # 1000 and -1: unseen / invalid
    ids, remapped = head.sample_classes(labels)
    ids, remapped = np.asarray(ids), np.asarray(remapped)
    assert head.num_draws == 52  # ceil(-1000 ln 0.95)
    assert len(ids) == head.num_draws + len(labels)
    assert np.all(np.diff(ids) >= 0) and ids.min() >= 0 and ids.max() < 1000
    for label, r in zip(labels, remapped):
        if 0 <= label < 1000:
            assert ids[r] == label and (r == 0 or ids[r - 1] != label)  # first column
        else:
            assert r == len(ids)  # out of range: the losses give it zero loss


def test_draws_cover_classes_uniformly_with_the_configured_share():
    head = built_head(num_classes=200, negative_share=0.1)
    seen = np.zeros(200)
    samples, distinct = set(), []
    for _ in range(200):
        ids = np.asarray(head.sample_classes(np.array([0]))[0])
        assert 0 in ids
        unique = np.unique(ids)
        distinct.append(len(unique))
        seen[unique] += 1
        samples.add(tuple(unique.tolist()))
    assert len(samples) > 190  # a new sample each step
    # About share * C = 20 distinct random classes (+ the positive, which may repeat one).
    assert 19 < np.mean(distinct) < 23
    negatives = seen[1:]  # each class drawn in ~10% of 200 steps
    assert negatives.min() > 3 and negatives.max() < 45


def test_sampled_logits_are_the_full_logits_columns_and_repeats_are_masked():
    head = built_head(num_classes=100, negative_share=0.5)
    x = np.random.rand(5, 6).astype("float32")
    ids, _ = head.sample_classes(np.array([1, 2, 3, 4, 5]))
    ids = np.asarray(ids)
    repeated = np.concatenate([[False], ids[1:] == ids[:-1]])
    assert repeated.any()  # 74 draws from 100 classes repeat some
    sampled = np.asarray(head.sampled_logits(x, ids))
    full = np.asarray(head(x))[:, ids]
    np.testing.assert_allclose(sampled[:, ~repeated], full[:, ~repeated], rtol=1e-5, atol=1e-6)
    assert np.all(sampled[:, repeated] == -1e9)


def test_share_one_gives_exact_softmax_loss_with_logit_adjustment():
    # With negative_share=1 the sample is every class: the sampled logit-adjusted loss equals
    # the dense one (the prior is taken over the same ids).
    head = built_head(num_classes=30, negative_share=1.0)
    counts = np.arange(30, 0, -1) * 3
    log_prior = long_tail_losses.log_class_prior(counts)
    x = np.random.rand(8, 6).astype("float32")
    y = np.random.RandomState(1).randint(0, 30, 8)
    dense = long_tail_losses.long_tail_cross_entropy(y, head(x), log_prior, "logit_adjust", 0.7)
    ids, y_k = head.sample_classes(y)
    assert len(np.asarray(ids)) == 30
    sampled = long_tail_losses.long_tail_cross_entropy(
        y_k, head.sampled_logits(x, ids), ops.take(log_prior, ids), "logit_adjust", 0.7)
    np.testing.assert_allclose(sampled, dense, rtol=1e-5, atol=1e-5)


def test_centre_gradient_is_row_sparse_on_tensorflow():
    head = built_head(num_classes=10_000, negative_share=0.01)
    x = tf.constant(np.random.rand(4, 6).astype("float32"))
    ids, y_k = head.sample_classes(np.array([1, 2, 3, 4]))
    with tf.GradientTape() as tape:
        logits = head.sampled_logits(x, ids)
        loss = ops.mean(long_tail_losses.long_tail_cross_entropy(
            y_k, logits, np.zeros(10_000, "float32"), "ce"))
    grad_w, grad_b = tape.gradient(loss, [head.centres.value, head.bias.value])
    assert isinstance(grad_w, tf.IndexedSlices) and isinstance(grad_b, tf.IndexedSlices)
    assert grad_w.values.shape[0] == len(np.asarray(ids))


def _model_and_optimizer(num_classes, momentum):
    inputs = keras.Input((6,))
    head = SampledClassifierHead(num_classes, seed=0, name="visual_head")
    dense = keras.layers.Dense(6, name="trunk")
    model = keras.Model(inputs, head(dense(inputs)))
    opt = SparseCentreAdamW(centre_learning_rate=0.5, centre_momentum=momentum,
                            learning_rate=1e-3, weight_decay=0.1)
    return model, head, dense, opt


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_optimizer_updates_only_the_gradient_rows_and_keeps_no_adam_slot_for_centres(momentum):
    model, head, dense, opt = _model_and_optimizer(1000, momentum)
    variables = model.trainable_variables
    opt.build(variables)
    slot_shapes = [tuple(v.shape) for v in opt.variables]
    assert (1000, 6) not in slot_shapes or momentum > 0
    assert slot_shapes.count((1000, 6)) == (1 if momentum > 0 else 0)  # never Adam's two
    assert (6, 6) in slot_shapes  # the trunk has Adam slots
    before = head.centres.numpy().copy()
    rows_1, rows_2 = np.array([3, 5, 5]), np.array([7])
    for rows in (rows_1, rows_2):
        grads = []
        for v in variables:
            if v is head.centres:
                values = np.ones((len(rows), 6), "float32")
                grads.append(tf.IndexedSlices(tf.constant(values), tf.constant(rows),
                                              tf.constant([1000, 6])))
            elif v is head.bias:
                grads.append(tf.IndexedSlices(tf.ones((len(rows),)), tf.constant(rows),
                                              tf.constant([1000])))
            else:
                grads.append(tf.zeros_like(v.value))
        opt.apply_gradients(zip(grads, variables))
    after = head.centres.numpy()
    changed = set(np.where(np.any(after != before, axis=1))[0].tolist())
    assert changed == {3, 5, 7}  # lazy momentum: row 3 is not moved again at step 2
    # Row 5 appeared twice in one step: its gradient is summed (2), lr 0.5, no decay.
    np.testing.assert_allclose(after[5], before[5] - 0.5 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(after[3], before[3] - 0.5, rtol=1e-6)
    assert np.all(head.bias.numpy()[[0, 1, 2, 4, 6, 8]] == 0.0)


def test_fit_with_sampled_head_learns_the_full_softmax_classifier():
    num_classes = 2000

    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.trunk = keras.layers.Dense(8)
            self.visual_head = SampledClassifierHead(num_classes, 0.02, seed=1,
                                                     name="visual_head")

        def call(self, x, training=False):
            features = self.trunk(x)
            if training:
                return {"features": features}
            return {"features": features, "logits": self.visual_head(features)}

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            ids, y_k = self.visual_head.sample_classes(y)
            logits = self.visual_head.sampled_logits(y_pred["features"], ids)
            return ops.mean(long_tail_losses.long_tail_cross_entropy(
                y_k, logits, np.zeros(num_classes, "float32"), "ce"))

    rng = np.random.RandomState(0)
    centres = rng.randn(10, 4).astype("float32") * 3
    y = rng.randint(0, 10, 512)
    x = centres[y] + rng.randn(512, 4).astype("float32") * 0.3
    model = Tiny()
    model(x[:1])
    model.compile(optimizer=SparseCentreAdamW(centre_learning_rate=0.5,
                                              learning_rate=1e-2, weight_decay=1e-4))
    model.fit(x, y, batch_size=64, epochs=15, verbose=0)
    assert not any(tuple(v.shape) == (num_classes, 8) for v in model.optimizer.variables)
    predictions = np.argmax(np.asarray(model(x)["logits"]), -1)
    assert (predictions == y).mean() > 0.9  # exact full softmax at inference


def test_distillation_over_one_shared_sample_is_finite_with_repeated_columns():
    # Co-training: teacher and student heads use the same ids; masked columns must not make
    # the KL infinite or NaN.
    student = built_head(num_classes=50, negative_share=0.6)
    teacher = built_head(num_classes=50, negative_share=0.6, classifier_type="cosine")
    x = np.random.rand(4, 6).astype("float32")
    ids, _ = student.sample_classes(np.array([1, 2, 3, 4]))
    kl = np.asarray(long_tail_losses.distillation_loss(
        student.sampled_logits(x, ids), teacher.sampled_logits(x, ids), 2.0))
    assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-5)
    same = np.asarray(long_tail_losses.distillation_loss(
        student.sampled_logits(x, ids), student.sampled_logits(x, ids), 2.0))
    np.testing.assert_allclose(same, 0.0, atol=1e-5)
