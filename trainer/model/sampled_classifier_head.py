"""`SampledClassifierHead`: a classifier for up to millions of classes that trains on a sample.

Partial FC (An et al. 2021, "Partial FC: Training 10 Million Identities on a Single Machine";
deepinsight/insightface recognition/arcface_torch/partial_fc_v2.py): each training step uses
the class centres of every positive class of the batch plus a random share of the others, so
the logits, their gradient and the centre gradient are [B, K] / [K, D] with K << C; evaluation
and serving use the exact full softmax over all C centres.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from sicot.trainer.model.config import CLASSIFIER_TYPES


@keras.saving.register_keras_serializable(package="sicot")
class SampledClassifierHead(layers.Layer):
    """Class logits over all classes (inference) or over a sampled set of classes (training).

    Centres are stored as rows, `centres` [C, D] (and `bias` [C] for `linear`), so a training
    step gathers rows: on TensorFlow the centre gradient is then an `IndexedSlices` over the K
    sampled rows, which `SparseCentreAdamW` applies with a sparse SGD update.

    Training (the caller, e.g. `SICoTModel.compute_loss`, owns the sampling so several heads
    share one sample and the distillation teacher is over the same classes):
      ids, sampled_labels = head.sample_classes(labels)     # ids [K], labels remapped [B]
      logits = head.sampled_logits(features, ids)           # [B, K]
      log_prior_k = ops.take(log_prior, ids)                # for logit adjustment
    K = B + n with n = `num_draws`: every positive class of the batch is in the sample, plus
    n uniform random draws (with replacement, n chosen so that about `negative_share * C`
    distinct classes are drawn; a repeated class is masked). Labels outside [0, C) (a class
    unseen in training) map to K, which the long-tail losses give zero loss.

    Args:
      num_classes: int. C.
      negative_share: float in (0, 1]. Share of all classes sampled besides the positives
        (Partial FC's sample_rate; 0.1 in the paper). 1.0 samples every class.
      classifier_type: str. `linear` (x . w_c + b_c) or `cosine` (scale * cos(x, w_c)).
      scale: float. Initial (or fixed) scale of the cosine classifier.
      learn_scale: bool. Learn the cosine scale (as a log-parameter).
      seed: int or None. Seed of the class sampler.

    Call arguments:
      features: float [B, D].

    Returns:
      float32 logits [B, num_classes] (exact, all classes).

    Example:
    >>> head = SampledClassifierHead(1000, negative_share=0.1)
    >>> x = keras.ops.ones((4, 8))
    >>> head(x).shape
    (4, 1000)
    >>> ids, y = head.sample_classes(keras.ops.array([3, 3, 7, 999]))
    >>> head.sampled_logits(x, ids).shape
    (4, 110)
    """

    def __init__(self, num_classes, negative_share=0.1, classifier_type="linear", scale=16.0,
                 learn_scale=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"SampledClassifierHead: num_classes={num_classes!r} must be >= 1")
        if not 0.0 < float(negative_share) <= 1.0:
            raise ValueError(f"SampledClassifierHead: negative_share={negative_share!r} must be "
                             f"in (0, 1]")
        if classifier_type not in CLASSIFIER_TYPES:
            raise ValueError(f"SampledClassifierHead: classifier_type={classifier_type!r}, "
                             f"expected one of {CLASSIFIER_TYPES}")
        if float(scale) <= 0:
            raise ValueError(f"SampledClassifierHead: scale={scale!r} must be > 0")
        self.num_classes = int(num_classes)
        self.negative_share = float(negative_share)
        self.classifier_type = classifier_type
        self.scale = float(scale)
        self.learn_scale = bool(learn_scale)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def num_draws(self) -> int:
        """Random class draws per step (with replacement), so that about `negative_share * C`
        distinct classes are drawn: E[distinct] = C (1 - (1 - 1/C)^n) = share * C for
        n = -C ln(1 - share). 0 means every class (share 1)."""
        if self.negative_share >= 1.0:
            return 0
        return max(1, math.ceil(-self.num_classes * math.log1p(-self.negative_share)))

    def build(self, input_shape):
        dim = input_shape[-1]
        # glorot_uniform of the [D, C] layout, so this head starts like `ClassifierHead`.
        limit = math.sqrt(6.0 / (dim + self.num_classes))
        self.centres = self.add_weight(
            name="centres", shape=(self.num_classes, dim),
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=self.seed))
        if self.classifier_type == "linear":
            self.bias = self.add_weight(name="bias", shape=(self.num_classes,),
                                        initializer="zeros")
        else:
            self.log_scale = self.add_weight(
                name="log_scale", shape=(), trainable=self.learn_scale,
                initializer=keras.initializers.Constant(math.log(self.scale)))
        self.built = True

    def centre_variables(self):
        """The [C, ...] variables whose gradient is sparse (row-wise) in a sampled step."""
        return [self.centres] + ([self.bias] if self.classifier_type == "linear" else [])

    def _logits(self, features, centres, bias):
        features = ops.cast(features, "float32")
        if self.classifier_type == "linear":
            return ops.matmul(features, ops.transpose(centres)) + bias
        features = features / ops.sqrt(ops.sum(ops.square(features), -1, keepdims=True) + 1e-12)
        centres = centres / ops.sqrt(ops.sum(ops.square(centres), -1, keepdims=True) + 1e-12)
        return ops.exp(self.log_scale) * ops.matmul(features, ops.transpose(centres))

    def call(self, features):
        bias = self.bias if self.classifier_type == "linear" else None
        return self._logits(features, self.centres, bias)

    def sample_classes(self, labels):
        """(ids int32 [K], labels remapped into [0, K], int32 [B]) for one training step.

        ids = sort(the B labels + `num_draws` uniform random classes); a class drawn twice
        keeps its first column and `sampled_logits` masks the others, so every class counts
        once in the softmax. The cost is O(K log K), independent of C (a top-K over C random
        scores, Partial FC's way of drawing exactly K distinct classes, took 0.4-0.6 s per
        step at C = 1M on this CPU). With negative_share 1, ids = all classes.
        """
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        valid = ops.logical_and(labels >= 0, labels < self.num_classes)
        if self.num_draws == 0:
            ids = ops.arange(self.num_classes, dtype="int32")
            return ids, ops.where(valid, labels, ops.full_like(labels, self.num_classes))
        # An out-of-range label (unseen class) contributes a random class instead.
        filler = keras.random.randint(ops.shape(labels), 0, self.num_classes,
                                      seed=self.seed_generator, dtype="int32")
        draws = keras.random.randint((self.num_draws,), 0, self.num_classes,
                                     seed=self.seed_generator, dtype="int32")
        ids = ops.sort(ops.concatenate([ops.where(valid, labels, filler), draws]))
        position = ops.cast(ops.searchsorted(ids, labels, side="left"), "int32")
        k = ops.shape(ids)[0]
        return ids, ops.where(valid, position, ops.full_like(position, k))

    def sampled_logits(self, features, ids):
        """Logits [B, K] over the classes `ids` (sorted, from `sample_classes`); the repeated
        columns of a class drawn more than once are set to -1e9 (zero probability, zero
        gradient; finite so that a KL between two such logit sets stays finite)."""
        centres = ops.take(self.centres, ids, axis=0)
        bias = ops.take(self.bias, ids, axis=0) if self.classifier_type == "linear" else None
        logits = self._logits(features, centres, bias)
        repeated = ops.concatenate(
            [ops.zeros((1,), dtype="bool"), ops.equal(ids[1:], ids[:-1])], axis=0)
        return ops.where(ops.expand_dims(repeated, 0), ops.full_like(logits, -1e9), logits)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, negative_share=self.negative_share,
                      classifier_type=self.classifier_type, scale=self.scale,
                      learn_scale=self.learn_scale, seed=self.seed)
        return config
