"""`EnrolledSICoTModel`: a trained `SICoTModel` plus classes enrolled without training."""
from __future__ import annotations

import keras
from keras import ops

from sicot import contract
from sicot.trainer.prototype_head import PrototypeHead
from sicot.trainer.sicot_model import SICoTModel

@keras.saving.register_keras_serializable(package="sicot")
class EnrolledSICoTModel(keras.Model):
    """The trained model's outputs, with each head's logits extended by enrolled classes.

    Class ids 0..C-1 are the trained classes (the base model's, unchanged), C..C+N-1 the
    enrolled ones, scored by one `PrototypeHead` per head on that head's input (visual: v;
    semantic: s; fused: [v, s]). The base model is frozen: enrolment takes no gradient step.

    Args:
      base: SICoTModel (or its serialized config).
      enrolled_classes: int. N.

    Call arguments and outputs: as `SICoTModel`, with [B, C + N] logits.
    """

    def __init__(self, base, enrolled_classes, **kwargs):
        super().__init__(**kwargs)
        if isinstance(base, dict):
            base = keras.saving.deserialize_keras_object(base)
        if not isinstance(base, SICoTModel):
            raise ValueError(f"EnrolledSICoTModel: base must be a SICoTModel, got "
                             f"{type(base).__name__}")
        self.base = base
        self.base.trainable = False
        self.enrolled_classes = int(enrolled_classes)
        cfg = base.model_config
        dim = cfg.embedding_dim
        self.visual_enrolled = PrototypeHead(self.enrolled_classes, dim, name="visual_enrolled")
        if cfg.uses_text:
            self.semantic_enrolled = PrototypeHead(self.enrolled_classes, dim,
                                                   name="semantic_enrolled")
            self.fused_enrolled = PrototypeHead(self.enrolled_classes, 2 * dim,
                                                name="fused_enrolled")

    # What the rest of the code reads from a model (export, embeddings, enrolment).
    @property
    def trained_classes(self) -> int:
        return self.base.num_classes

    @property
    def num_classes(self) -> int:
        return self.base.num_classes + self.enrolled_classes

    @property
    def model_config(self):
        return self.base.model_config

    @property
    def visual_tower(self):
        return self.base.visual_tower

    @property
    def word_attention(self):
        return self.base.word_attention

    def enrolled_head(self, name: str) -> PrototypeHead:
        return getattr(self, f"{name}_enrolled")

    def build(self, input_shape):
        if not self.base.built:
            self.base.build(input_shape)
        dim = self.model_config.embedding_dim
        self.visual_enrolled.build((None, dim))
        if self.model_config.uses_text:
            self.semantic_enrolled.build((None, dim))
            self.fused_enrolled.build((None, 2 * dim))
        self.built = True

    def call(self, inputs, training=False):
        out = dict(self.base(inputs, training=False))
        visual = out[contract.EMBEDDING]
        out[contract.VISUAL_LOGITS] = ops.concatenate(
            [out[contract.VISUAL_LOGITS], self.visual_enrolled(visual)], axis=-1)
        if contract.SEMANTIC in out:
            semantic = out[contract.SEMANTIC]
            out[contract.SEMANTIC_LOGITS] = ops.concatenate(
                [out[contract.SEMANTIC_LOGITS], self.semantic_enrolled(semantic)], axis=-1)
            out[contract.FUSED_LOGITS] = ops.concatenate(
                [out[contract.FUSED_LOGITS],
                 self.fused_enrolled(ops.concatenate([visual, semantic], axis=-1))], axis=-1)
        return out

    def get_config(self):
        return {"base": keras.saving.serialize_keras_object(self.base),
                "enrolled_classes": self.enrolled_classes, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
