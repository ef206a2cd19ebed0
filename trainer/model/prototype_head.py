"""`PrototypeHead`: classes scored by cosine similarity to a prototype, on a calibrated scale."""
from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="sicot")
class PrototypeHead(layers.Layer):
    """Logits of enrolled classes: scale * cos(z, prototype_n) + offset.

    The prototypes are unit vectors in the input space of a trained head (weight imprinting,
    Qi et al. 2018, "Low-Shot Learning with Imprinted Weights"); scale and offset put the
    scores on the trained head's logit scale (`sicot.trainer.enrollment.prototypes`). Nothing here trains:
    every weight is set by enrolment.

    Args:
      num_classes: int. N enrolled classes (0 allowed: no logits).
      input_dim: int. Size of the features.

    Call arguments:
      features: float [B, input_dim].

    Returns:
      float32 logits [B, num_classes].

    Example:
    >>> head = PrototypeHead(3, 4)
    >>> head(keras.ops.ones((2, 4))).shape
    (2, 3)
    """

    def __init__(self, num_classes, input_dim, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 0 or int(input_dim) < 1:
            raise ValueError(f"PrototypeHead: num_classes={num_classes!r} must be >= 0 and "
                             f"input_dim={input_dim!r} >= 1")
        self.num_classes = int(num_classes)
        self.input_dim = int(input_dim)

    def build(self, input_shape=None):
        self.prototypes = self.add_weight(name="prototypes",
                                          shape=(self.num_classes, self.input_dim),
                                          initializer="zeros", trainable=False)
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones",
                                     trainable=False)
        self.offset = self.add_weight(name="offset", shape=(), initializer="zeros",
                                      trainable=False)
        self.built = True

    def call(self, features):
        features = ops.cast(features, "float32")
        features = features / ops.sqrt(ops.sum(ops.square(features), -1, keepdims=True) + 1e-12)
        return self.scale * ops.matmul(features, ops.transpose(self.prototypes)) + self.offset

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, input_dim=self.input_dim)
        return config
