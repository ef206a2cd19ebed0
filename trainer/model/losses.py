"""Long-tail-aware classification losses and the co-training terms (Keras 3 ops only).

Every function returns a per-example loss [B] so the caller can weight and average.
"""
from __future__ import annotations

import numpy as np
from keras import ops

from sicot.trainer.model.config import LISTING_LOSSES

LOSS_TYPES = ("ce", "logit_adjust", "balanced_softmax")
ALIGN_DIRECTIONS = ("visual_to_semantic", "semantic_to_visual", "both")


def log_class_prior(class_counts) -> np.ndarray:
    """log p(y) from training counts; a zero count is floored at 1 (no -inf)."""
    counts = np.maximum(np.asarray(class_counts, dtype="float64"), 1.0)
    return np.log(counts / counts.sum()).astype("float32")


def training_logits(logits, log_prior, loss_type: str, tau: float = 1.0):
    """The logits the training loss sees.

    logit_adjust (Menon et al. 2021, "Long-tail learning via logit adjustment", eq. 10):
      softmax cross-entropy on f_y(x) + tau * log p(y); at inference the plain f(x) is used,
      which is Bayes-consistent for the balanced error.
    balanced_softmax (Ren et al. 2020, "Balanced Meta-Softmax", eq. 4): the same with the
      exponent fixed to 1, i.e. p(y|x) proportional to n_y exp(f_y(x)).
    ce: the logits unchanged.
    """
    if loss_type == "ce":
        return logits
    if loss_type == "logit_adjust":
        return logits + tau * ops.convert_to_tensor(log_prior)
    if loss_type == "balanced_softmax":
        return logits + ops.convert_to_tensor(log_prior)
    raise ValueError(f"loss_type={loss_type!r}: expected one of {LOSS_TYPES}")


def long_tail_cross_entropy(labels, logits, log_prior, loss_type: str, tau: float = 1.0):
    """Per-example softmax cross-entropy on the adjusted logits; [B] float32.

    Labels outside [0, C) (the Transform maps a class unseen in training to C) get loss 0.
    """
    num_classes = ops.shape(logits)[-1]
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    valid = ops.cast(ops.logical_and(labels >= 0, labels < num_classes), "float32")
    safe_labels = ops.where(valid > 0, labels, ops.zeros_like(labels))
    adjusted = training_logits(ops.cast(logits, "float32"), log_prior, loss_type, tau)
    log_probs = ops.log_softmax(adjusted, axis=-1)
    picked = ops.take_along_axis(log_probs, ops.expand_dims(safe_labels, -1), axis=-1)
    return -ops.squeeze(picked, -1) * valid


def distillation_loss(student_logits, teacher_logits, temperature: float):
    """KL(softmax(teacher/T) || softmax(student/T)) * T^2, teacher held fixed; [B].

    Hinton et al. 2015: the T^2 factor keeps gradient magnitudes comparable across T.
    """
    teacher = ops.stop_gradient(ops.cast(teacher_logits, "float32")) / temperature
    student = ops.cast(student_logits, "float32") / temperature
    teacher_log_probs = ops.log_softmax(teacher, axis=-1)
    student_log_probs = ops.log_softmax(student, axis=-1)
    kl = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    return kl * (temperature ** 2)


def _l2_normalize(x):
    return x / ops.sqrt(ops.sum(ops.square(x), -1, keepdims=True) + 1e-12)


def cosine_alignment_loss(visual, semantic, direction: str):
    """1 - cos(v, s); [B]. `direction` names the side that moves, the other is held fixed."""
    if direction not in ALIGN_DIRECTIONS:
        raise ValueError(f"direction={direction!r}: expected one of {ALIGN_DIRECTIONS}")
    if direction == "visual_to_semantic":
        semantic = ops.stop_gradient(semantic)
    elif direction == "semantic_to_visual":
        visual = ops.stop_gradient(visual)
    return 1.0 - ops.sum(_l2_normalize(visual) * _l2_normalize(semantic), axis=-1)


def contrastive_loss(visual, semantic, labels, temperature: float, valid=None):
    """Symmetric image-text InfoNCE over the batch (Radford et al. 2021, CLIP); [B].

    Row i's positive is its own text; texts of other examples of the same class are neither
    positive nor negative (masked out), since in a long-tailed batch a head class often appears
    several times. Examples with `valid` 0 (no text) neither score nor serve as negatives.
    Both sides move. Returns the mean of the image->text and text->image terms per example.
    """
    v = _l2_normalize(ops.cast(visual, "float32"))
    s = _l2_normalize(ops.cast(semantic, "float32"))
    logits = ops.matmul(v, ops.transpose(s)) / temperature  # [B, B]
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    batch = ops.shape(logits)[0]
    eye = ops.eye(batch, dtype="float32")
    same = ops.cast(ops.equal(labels[:, None], labels[None, :]), "float32")
    if valid is None:
        valid = ops.ones((batch,), "float32")
    valid = ops.cast(valid, "float32")
    # Keep the diagonal and the pairs of different classes whose both sides have text.
    keep = (eye + (1.0 - same)) * valid[:, None] * valid[None, :]
    masked = ops.where(keep > 0, logits, ops.full_like(logits, -1e9))
    diag = ops.sum(logits * eye, axis=-1)
    image_to_text = ops.logsumexp(masked, axis=-1) - diag
    text_to_image = ops.logsumexp(ops.transpose(masked), axis=-1) - diag
    return 0.5 * (image_to_text + text_to_image) * valid


def listing_loss(listing, visual, labels, kind: str, temperature: float = 0.1):
    """How far a listing's visual-space estimate is from its photos; [B] (issue 13).

    `listing` [B, D] is the projected listing embedding of each example's own text, `visual`
    [B, D] the visual embeddings of the batch's photos; the visual side gets a stop-gradient
    (only the text side learns to land on the photos, not the reverse). `cosine`: 1 - cos(t_i,
    v_i). `contrastive`: text -> image InfoNCE over the batch's photos with every photo of the
    same label a positive (supervised contrastive, Khosla et al. 2020):
    logsumexp_j(c_ij / T) - logsumexp_{j: y_j = y_i}(c_ij / T), c the cosine, so a listing is
    pulled toward its class's photos and away from other classes' (what enrolment needs: a
    listing prototype nearer its own class than the others).
    """
    if kind not in LISTING_LOSSES:
        raise ValueError(f"kind={kind!r}: expected one of {list(LISTING_LOSSES)}")
    t = _l2_normalize(ops.cast(listing, "float32"))
    v = _l2_normalize(ops.stop_gradient(ops.cast(visual, "float32")))
    if kind == "cosine":
        return 1.0 - ops.sum(t * v, axis=-1)
    logits = ops.matmul(t, ops.transpose(v)) / temperature  # [B, B]
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    same = ops.equal(labels[:, None], labels[None, :])  # the diagonal included: never empty
    positives = ops.logsumexp(ops.where(same, logits, ops.full_like(logits, -1e9)), axis=-1)
    return ops.logsumexp(logits, axis=-1) - positives
