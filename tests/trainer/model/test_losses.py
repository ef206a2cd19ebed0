"""Losses against numpy references."""
import numpy as np
import pytest
import tensorflow as tf

from sicot.trainer.model import losses as L

COUNTS = np.array([100, 30, 5, 1])
RNG = np.random.RandomState(0)
LOGITS = RNG.randn(6, 4).astype("float32") * 2
LABELS = np.array([0, 1, 2, 3, 3, 2])


def _np_ce(logits, labels):
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


def test_log_prior():
    np.testing.assert_allclose(L.log_class_prior(COUNTS), np.log(COUNTS / COUNTS.sum()),
                               rtol=1e-6)
    assert np.isfinite(L.log_class_prior([3, 0])).all()


@pytest.mark.parametrize("loss_type, tau, shift", [
    ("ce", 1.0, 0.0), ("logit_adjust", 0.5, 0.5), ("logit_adjust", 2.0, 2.0),
    ("balanced_softmax", 2.0, 1.0)])
def test_long_tail_cross_entropy_matches_numpy(loss_type, tau, shift):
    log_prior = L.log_class_prior(COUNTS)
    got = np.asarray(L.long_tail_cross_entropy(LABELS, LOGITS, log_prior, loss_type, tau))
    ref = _np_ce(LOGITS + shift * np.log(COUNTS / COUNTS.sum()), LABELS)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_logit_adjustment_penalises_tail_predictions_less_than_ce():
    # Same logits: the adjusted loss is larger on a tail label (the model must push its
    # logit beyond the prior) and smaller on a head label.
    log_prior = L.log_class_prior(COUNTS)
    ce = np.asarray(L.long_tail_cross_entropy(LABELS, LOGITS, log_prior, "ce"))
    la = np.asarray(L.long_tail_cross_entropy(LABELS, LOGITS, log_prior, "logit_adjust"))
    assert la[3] > ce[3] and la[0] < ce[0]


def test_unseen_label_has_zero_loss():
    got = np.asarray(L.long_tail_cross_entropy(np.array([4, 0]), LOGITS[:2],
                                               L.log_class_prior(COUNTS), "ce"))
    assert got[0] == 0 and got[1] > 0


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="focal"):
        L.long_tail_cross_entropy(LABELS, LOGITS, L.log_class_prior(COUNTS), "focal")


def test_distillation_matches_numpy_kl_and_stops_teacher_gradient():
    t = 3.0
    teacher = RNG.randn(6, 4).astype("float32")
    got = np.asarray(L.distillation_loss(LOGITS, teacher, t))
    pt = np.exp(teacher / t) / np.exp(teacher / t).sum(-1, keepdims=True)
    ps = np.exp(LOGITS / t) / np.exp(LOGITS / t).sum(-1, keepdims=True)
    np.testing.assert_allclose(got, (pt * np.log(pt / ps)).sum(-1) * t * t, rtol=1e-4)
    s, tv = tf.Variable(LOGITS), tf.Variable(teacher)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(L.distillation_loss(s, tv, t))
    gs, gt = tape.gradient(loss, [s, tv])
    assert gt is None and np.abs(gs.numpy()).sum() > 0


@pytest.mark.parametrize("direction, moves_v, moves_s", [
    ("visual_to_semantic", True, False), ("semantic_to_visual", False, True),
    ("both", True, True)])
def test_alignment_direction_controls_which_side_moves(direction, moves_v, moves_s):
    v, s = tf.Variable(RNG.randn(3, 5).astype("float32")), tf.Variable(
        RNG.randn(3, 5).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(L.cosine_alignment_loss(v, s, direction))
    gv, gs = tape.gradient(loss, [v, s])
    assert (gv is not None) == moves_v and (gs is not None) == moves_s
    ref = 1 - (v.numpy() * s.numpy()).sum(-1) / (
        np.linalg.norm(v.numpy(), axis=-1) * np.linalg.norm(s.numpy(), axis=-1))
    np.testing.assert_allclose(
        np.asarray(L.cosine_alignment_loss(v, s, direction)), ref, rtol=1e-5)


def _np_contrastive(v, s, labels, t, valid):
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    z = v @ s.T / t
    out = np.zeros(len(v))
    for i in range(len(v)):
        if not valid[i]:
            continue
        keep = [j for j in range(len(v)) if valid[j] and (j == i or labels[j] != labels[i])]
        row = np.log(np.exp(z[i, keep]).sum()) - z[i, i]
        col = np.log(np.exp(z[keep, i]).sum()) - z[i, i]
        out[i] = 0.5 * (row + col)
    return out


def test_contrastive_matches_numpy_masks_same_class_and_skips_rows_without_text():
    v, s = RNG.randn(6, 5).astype("float32"), RNG.randn(6, 5).astype("float32")
    valid = np.array([1, 1, 0, 1, 1, 1], "float32")
    got = np.asarray(L.contrastive_loss(v, s, LABELS, 0.5, valid=valid))
    np.testing.assert_allclose(got, _np_contrastive(v, s, LABELS, 0.5, valid), rtol=1e-4,
                               atol=1e-5)
    assert got[2] == 0 and np.isfinite(got).all()
    # A same-class text is not a negative: changing it leaves row 3's loss alone
    # (rows 3 and 4 share class 3), a different-class text changes it.
    s2 = s.copy()
    s2[4] = RNG.randn(5)
    np.testing.assert_allclose(np.asarray(L.contrastive_loss(v, s2, LABELS, 0.5))[3],
                               np.asarray(L.contrastive_loss(v, s, LABELS, 0.5))[3], rtol=1e-5)
    s2[0] = RNG.randn(5)
    assert not np.isclose(np.asarray(L.contrastive_loss(v, s2, LABELS, 0.5))[3],
                          np.asarray(L.contrastive_loss(v, s, LABELS, 0.5))[3])


def test_contrastive_moves_both_sides_and_matched_pairs_score_low():
    v, s = tf.Variable(RNG.randn(4, 5).astype("float32")), tf.Variable(
        RNG.randn(4, 5).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(L.contrastive_loss(v, s, np.arange(4), 0.1))
    gv, gs = tape.gradient(loss, [v, s])
    assert np.abs(gv.numpy()).sum() > 0 and np.abs(gs.numpy()).sum() > 0
    matched = np.asarray(L.contrastive_loss(v.numpy(), v.numpy(), np.arange(4), 0.1))
    assert (matched < np.asarray(L.contrastive_loss(v.numpy(), s.numpy(), np.arange(4), 0.1))
            ).all()


def _np_listing_contrastive(t, v, labels, temperature):
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    z = t @ v.T / temperature
    same = labels[:, None] == labels[None, :]
    return np.array([np.log(np.exp(z[i]).sum()) - np.log(np.exp(z[i, same[i]]).sum())
                     for i in range(len(t))])


def test_listing_loss_matches_numpy_and_moves_only_the_listing_side():
    t, v = RNG.randn(6, 5).astype("float32"), RNG.randn(6, 5).astype("float32")
    np.testing.assert_allclose(np.asarray(L.listing_loss(t, v, LABELS, "contrastive", 0.5)),
                               _np_listing_contrastive(t, v, LABELS, 0.5), rtol=1e-4, atol=1e-5)
    cos = (t * v).sum(-1) / (np.linalg.norm(t, axis=-1) * np.linalg.norm(v, axis=-1))
    np.testing.assert_allclose(np.asarray(L.listing_loss(t, v, LABELS, "cosine")), 1 - cos,
                               rtol=1e-5)
    # Same-class photos are positives: a listing on its class's other photo scores low.
    on_class = v.copy()
    on_class[3] = v[4]  # rows 3 and 4 share class 3
    assert (L.listing_loss(on_class, v, LABELS, "contrastive", 0.1)[3]
            < L.listing_loss(v[[0, 1, 2, 0, 4, 5]], v, LABELS, "contrastive", 0.1)[3])
    tv, vv = tf.Variable(t), tf.Variable(v)
    for kind in ("contrastive", "cosine"):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(L.listing_loss(tv, vv, LABELS, kind, 0.1))
        gt, gv = tape.gradient(loss, [tv, vv])
        assert np.abs(gt.numpy()).sum() > 0 and gv is None  # the photos are held fixed
    with pytest.raises(ValueError, match="kind='dot'"):
        L.listing_loss(t, v, LABELS, "dot")
