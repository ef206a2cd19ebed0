"""`EnrolledSICoTModel`: a trained `SICoTModel` plus classes enrolled without training."""
from __future__ import annotations

import keras
from keras import ops

from sicot import contract
from sicot.trainer.model.prototype_head import PrototypeHead
from sicot.trainer.model.sicot_model import SICoTModel

@keras.saving.register_keras_serializable(package="sicot")
class EnrolledSICoTModel(keras.Model):
    """The trained model's outputs, with each head's logits extended by enrolled classes.

    Class ids 0..C-1 are the trained classes (the base model's), C..C+N-1 the enrolled ones,
    scored by one `PrototypeHead` per head on that head's input (visual: v; semantic: s;
    fused: [v, s]). The base model is frozen: enrolment takes no gradient step. For the heads
    in `same_footing` the trained classes are scored by a `PrototypeHead` over their class
    means too, in place of the trained head's logits (`sicot.trainer.enrollment.prototypes`, step 6);
    the other heads keep the trained logits unchanged.

    Args:
      base: SICoTModel (or its serialized config).
      enrolled_classes: int. N.
      same_footing: head names (`visual`, `semantic`, `fused`) whose trained classes are
        scored by their class means.

    Call arguments and outputs: as `SICoTModel`, with [B, C + N] logits.
    """

    def __init__(self, base, enrolled_classes, same_footing=(), **kwargs):
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
        heads = ("visual", "semantic", "fused") if cfg.uses_text else ("visual",)
        unknown = [h for h in same_footing if h not in heads]
        if unknown:
            raise ValueError(f"EnrolledSICoTModel: same_footing={list(same_footing)!r} names "
                             f"heads this model lacks: {unknown} (it has {list(heads)})")
        self.same_footing = tuple(h for h in heads if h in same_footing)
        for h in self.same_footing:  # attributes, as the enrolled heads (Keras tracks them)
            setattr(self, f"{h}_trained", PrototypeHead(
                base.num_classes, 2 * dim if h == "fused" else dim, name=f"{h}_trained"))
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

    def trained_head(self, name: str) -> PrototypeHead | None:
        """The prototype head scoring the trained classes of a same-footing head, else None."""
        return getattr(self, f"{name}_trained") if name in self.same_footing else None

    def build(self, input_shape):
        if not self.base.built:
            self.base.build(input_shape)
        dim = self.model_config.embedding_dim
        self.visual_enrolled.build((None, dim))
        if self.model_config.uses_text:
            self.semantic_enrolled.build((None, dim))
            self.fused_enrolled.build((None, 2 * dim))
        for name in self.same_footing:
            self.trained_head(name).build((None, 2 * dim if name == "fused" else dim))
        self.built = True

    def _trained(self, name, base_logits, features):
        head = self.trained_head(name)
        return base_logits if head is None else head(features)

    def call(self, inputs, training=False):
        out = dict(self.base(inputs, training=False))
        visual = out[contract.EMBEDDING]
        out[contract.VISUAL_LOGITS] = ops.concatenate(
            [self._trained("visual", out[contract.VISUAL_LOGITS], visual),
             self.visual_enrolled(visual)], axis=-1)
        if contract.SEMANTIC in out:
            semantic = out[contract.SEMANTIC]
            fused = ops.concatenate([visual, semantic], axis=-1)
            out[contract.SEMANTIC_LOGITS] = ops.concatenate(
                [self._trained("semantic", out[contract.SEMANTIC_LOGITS], semantic),
                 self.semantic_enrolled(semantic)], axis=-1)
            out[contract.FUSED_LOGITS] = ops.concatenate(
                [self._trained("fused", out[contract.FUSED_LOGITS], fused),
                 self.fused_enrolled(fused)], axis=-1)
        return out

    def get_config(self):
        return {"base": keras.saving.serialize_keras_object(self.base),
                "enrolled_classes": self.enrolled_classes,
                "same_footing": list(self.same_footing), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
