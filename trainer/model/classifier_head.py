"""`ClassifierHead`: a linear or cosine classifier over an embedding."""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from sicot.trainer.model.config import CLASSIFIER_TYPES


@keras.saving.register_keras_serializable(package="sicot")
class ClassifierHead(layers.Layer):
    """Class logits from a feature vector.

    `linear`: logits = x W + b. `cosine`: logits = scale * cos(x, w_c) with L2-normalised
    feature and class centres (Gidaris & Komodakis 2018; used for long-tailed recognition because
    the class-centre norms no longer grow with the class frequency), the scale learned or fixed.

    Args:
      num_classes: int.
      classifier_type: str. `linear` or `cosine`.
      scale: float. Initial (or fixed) scale of the cosine classifier.
      learn_scale: bool. Learn the cosine scale (as a log-parameter, kept positive).

    Call arguments:
      features: float [B, D].
      extra_centres: optional float [num_classes, D] added to the learned class centres
        (SICoT's text-composed centres), i.e. centre_c = w_c + extra_c.

    Returns:
      float32 logits [B, num_classes].

    Example:
    >>> ClassifierHead(5, "cosine")(keras.ops.ones((2, 3))).shape
    (2, 5)
    """

    def __init__(self, num_classes, classifier_type="linear", scale=16.0, learn_scale=True,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"ClassifierHead: num_classes={num_classes!r} must be >= 1")
        if classifier_type not in CLASSIFIER_TYPES:
            raise ValueError(f"ClassifierHead: classifier_type={classifier_type!r}, expected one "
                             f"of {CLASSIFIER_TYPES}")
        if float(scale) <= 0:
            raise ValueError(f"ClassifierHead: scale={scale!r} must be > 0")
        self.num_classes = int(num_classes)
        self.classifier_type = classifier_type
        self.scale = float(scale)
        self.learn_scale = bool(learn_scale)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(dim, self.num_classes),
                                      initializer="glorot_uniform")
        if self.classifier_type == "linear":
            self.bias = self.add_weight(name="bias", shape=(self.num_classes,),
                                        initializer="zeros")
        else:
            self.log_scale = self.add_weight(
                name="log_scale", shape=(), trainable=self.learn_scale,
                initializer=keras.initializers.Constant(math.log(self.scale)))
        self.built = True

    def call(self, features, extra_centres=None):
        features = ops.cast(features, "float32")
        kernel = self.kernel
        if extra_centres is not None:
            kernel = kernel + ops.transpose(ops.cast(extra_centres, "float32"))
        if self.classifier_type == "linear":
            return ops.matmul(features, kernel) + self.bias
        features = features / ops.sqrt(ops.sum(ops.square(features), -1, keepdims=True) + 1e-12)
        centres = kernel / ops.sqrt(ops.sum(ops.square(kernel), 0, keepdims=True) + 1e-12)
        return ops.exp(self.log_scale) * ops.matmul(features, centres)

    def compute_output_shape(self, input_shape, extra_centres_shape=None):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, classifier_type=self.classifier_type,
                      scale=self.scale, learn_scale=self.learn_scale)
        return config
