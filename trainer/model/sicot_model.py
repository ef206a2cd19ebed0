"""`SICoTModel`: visual tower, bilinear word attention and co-training heads, one Keras model.

The same class trains the long-tail baselines (`model_type` other than `sicot`): they use the
visual tower and visual head only, with the loss the config names.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from sicot import contract
from sicot.trainer.model import losses as long_tail_losses
from sicot.trainer.model.bilinear_word_attention import BilinearWordAttention
from sicot.trainer.model.classifier_head import ClassifierHead
from sicot.trainer.model.config import ModelConfig
from sicot.trainer.model.sampled_classifier_head import SampledClassifierHead
from sicot.trainer.model.visual_tower import VisualTower

# The input key of a frozen backbone's pooled features (training only, never served).
FEATURES_INPUT = "image_features"

@keras.saving.register_keras_serializable(package="sicot")
class SICoTModel(keras.Model):
    """Side-information co-training model (our reconstruction of SICoT, CIKM 2020).

    v = VisualTower(image); (s, a) = BilinearWordAttention(v, tokens);
    heads: visual(v), semantic(s), fused([v, s]).
    Loss (in `compute_loss`, backend-agnostic):
      w_v L(y, visual) + w_s L(y, semantic) + w_f L(y, fused)
      + w_d T^2 KL(softmax(sg(teacher')/T) || softmax(visual'/T)) + w_a (1 - cos(v, s))
      + w_w CE(word target, softmax(word_predictor(v)))
      + w_l L_listing(R s0, sg(v))
    where L is the long-tail loss of the config (CE / logit adjustment / balanced softmax with
    the class prior from the training counts), the teacher is the fused or semantic head and
    ' marks the logits in the loss's training space (+ tau log prior, `distill_space`).
    Text terms are averaged over the examples that have text only. At query time the visual
    head alone recognises an image; the fused head serves image + text queries.
    s0 is the word attention queried by nothing (every word of the example's text weighs the
    same: how enrolment reads a catalogue listing) and R a learned projection into the visual
    space (`listing_weight` > 0 only; `long_tail_losses.listing_loss`).
    With `text_centres`, the visual head's class centres are w_c + Q sum_k omega_ck e(word_ck)
    (the class word table set by `set_class_words`, embeddings e shared with the attention).

    Args:
      num_classes: int. Number of training classes.
      vocab_size: int. Number of token ids (vocabulary size + 2 for padding and OOV).
      class_counts: list of ints. Training images per class id (the prior for the losses).
      config: dict. A `ModelConfig` as a dict.

    Call arguments:
      inputs: dict with `image` float [B, S, S, 3] (0..255) and optionally `tokens` int [B, T].
        Without `tokens`, only the visual outputs are computed. In training over cached
        features (`cached_features.py`), `image_features` float [B, F] (the backbone's pooled
        features) replaces `image`.

    Returns:
      dict: `visual_logits` [B, C], `embedding` [B, D]; with tokens and a text model also
      `semantic_logits`, `fused_logits` [B, C], `semantic` [B, D], `attention` [B, T], and
      with `listing_weight` > 0 `listing_visual` [B, D] (R s0).
    """

    def __init__(self, num_classes, vocab_size, class_counts, config=None, **kwargs):
        super().__init__(**kwargs)
        cfg = ModelConfig.from_dict(config or {})
        class_counts = [int(c) for c in class_counts]
        if len(class_counts) != int(num_classes):
            raise ValueError(f"SICoTModel: {len(class_counts)} class_counts for "
                             f"num_classes={num_classes}")
        self.num_classes = int(num_classes)
        self.vocab_size = int(vocab_size)
        self.class_counts = class_counts
        self.config = cfg.to_dict()
        self.model_config = cfg
        self._log_prior = long_tail_losses.log_class_prior(class_counts)

        self.visual_tower = VisualTower(
            cfg.backbone, cfg.embedding_dim, stem_stride=cfg.stem_stride,
            frozen_bn=cfg.pretrained_tower and cfg.pretrained_bn == "frozen",
            name="visual_tower")
        # Above the class-count threshold: Partial FC heads (train on a class sample, exact
        # softmax at evaluation and serving), one sample per step shared by all heads.
        self.sampled = cfg.uses_sampled_classifier(self.num_classes)
        head_args = dict(classifier_type=cfg.classifier_type, scale=cfg.cosine_scale,
                         learn_scale=cfg.learn_cosine_scale)

        def head(name):
            if self.sampled:
                return SampledClassifierHead(self.num_classes, cfg.negative_share,
                                             seed=cfg.seed, name=name, **head_args)
            return ClassifierHead(self.num_classes, name=name, **head_args)

        self.visual_head = head("visual_head")
        if cfg.text_centres and self.sampled:
            raise ValueError(f"SICoTModel: text_centres is not implemented for sampled heads "
                             f"({self.num_classes} classes >= sampled_classifier_min_classes="
                             f"{cfg.sampled_classifier_min_classes})")
        if cfg.text_centres and cfg.text_centre_source == "embedding":
            self.text_centre_projection = layers.Dense(
                cfg.embedding_dim, use_bias=False, name="text_centre_projection")  # Q
        if cfg.word_prediction_weight > 0:
            self.word_predictor = layers.Dense(self.vocab_size, name="word_predictor")
        if cfg.listing_weight > 0:
            self.listing_projection = layers.Dense(cfg.embedding_dim,
                                                   name="listing_projection")  # R
        if cfg.uses_text:
            self.word_attention = BilinearWordAttention(
                self.vocab_size, cfg.token_dim, cfg.attention_rank, cfg.embedding_dim,
                use_attention=cfg.use_attention, name="word_attention")
            self.semantic_head = head("semantic_head")
            self.fused_head = head("fused_head")
        self.retraining = False  # cRT stage 2 (`start_classifier_retraining`)
        self._term_trackers = {}
        for term in self._loss_term_names():
            self._term_trackers[term] = keras.metrics.Mean(name=f"loss_{term}")
        self.visual_accuracy = keras.metrics.SparseCategoricalAccuracy(name="visual_accuracy")
        if cfg.uses_text:
            self.fused_accuracy = keras.metrics.SparseCategoricalAccuracy(name="fused_accuracy")

    def _loss_term_names(self):
        if not self.model_config.uses_text:
            return ("visual",)
        names = ("visual", "semantic", "fused", "distill", "align")
        if self.model_config.word_prediction_weight > 0:
            names += ("words",)
        if self.model_config.contrastive_weight > 0:
            names += ("contrast",)
        if self.model_config.listing_weight > 0:
            names += ("listing",)
        return names

    def build(self, input_shape):
        image_shape = tuple(input_shape[contract.IMAGE_INPUT])
        self.visual_tower.build(image_shape)
        dim = self.model_config.embedding_dim
        self.visual_head.build((None, dim))
        if self.model_config.uses_text:
            self.word_attention.build((None, dim), (None, None))
            self.semantic_head.build((None, dim))
            self.fused_head.build((None, 2 * dim))
        if self.model_config.text_centres:
            words = self.model_config.class_words
            self.class_word_ids = self.add_weight(
                name="class_word_ids", shape=(self.num_classes, words), dtype="int32",
                initializer="zeros", trainable=False)
            self.class_word_weights = self.add_weight(
                name="class_word_weights", shape=(self.num_classes, words),
                initializer="zeros", trainable=False)
            if self.model_config.text_centre_source == "embedding":
                self.text_centre_projection.build((None, self.model_config.token_dim))
            else:
                self.text_centre_scale = self.add_weight(
                    name="text_centre_scale", shape=(), initializer="ones")  # alpha
            if not self.model_config.free_centres:
                head = self.visual_head
                head.kernel.assign(ops.zeros(head.kernel.shape))
                head.kernel.trainable = False
        if self.model_config.word_prediction_weight > 0:
            self.word_predictor.build((None, dim))
        if self.model_config.listing_weight > 0:
            self.listing_projection.build((None, dim))
        self.built = True

    @property
    def has_listing_projection(self) -> bool:
        """Whether the model learned a listing -> visual projection R (`listing_weight`)."""
        return self.model_config.listing_weight > 0

    def listing_to_visual(self, listing):
        """R s0: listing embeddings [N, D] (s0) -> the visual space [N, D]."""
        return self.listing_projection(listing)

    def set_class_words(self, ids, weights):
        """Sets the class word table (`class_words.class_word_table`): ids int [C, K], weights
        float [C, K]."""
        expected = (self.num_classes, self.model_config.class_words)
        for name, value in (("ids", ids), ("weights", weights)):
            if tuple(np.shape(value)) != expected:
                raise ValueError(f"set_class_words: {name} has shape {np.shape(value)}, "
                                 f"expected {expected}")
        self.class_word_ids.assign(np.asarray(ids, dtype="int32"))
        self.class_word_weights.assign(np.asarray(weights, dtype="float32"))

    def text_centres(self):
        """Text-composed class centres [C, D]: Q sum_k omega_ck e(word_ck), or
        alpha sum_k omega_ck u(word_ck) with u the word predictor's detectors."""
        if self.model_config.text_centre_source == "word_predictor":
            detectors = ops.transpose(self.word_predictor.kernel)  # [V, D]
            words = ops.take(detectors, self.class_word_ids, axis=0)  # [C, K, D]
            pooled = ops.einsum("ck,ckd->cd", self.class_word_weights, words)
            return self.text_centre_scale * pooled
        words = self.word_attention.embed_tokens(self.class_word_ids)  # [C, K, E]
        pooled = ops.einsum("ck,cke->ce", self.class_word_weights, words)
        return self.text_centre_projection(pooled)

    def call(self, inputs, training=False):
        if FEATURES_INPUT in inputs:  # a frozen backbone's features, computed once
            visual = self.visual_tower.embed(inputs[FEATURES_INPUT], training=training)
        else:
            visual = self.visual_tower(inputs[contract.IMAGE_INPUT], training=training)
        # A sampled model in training returns features only: the logits over the step's class
        # sample are computed in `loss_terms`, where the labels are known.
        full_logits = not (self.sampled and training)
        outputs = {contract.EMBEDDING: visual}
        if full_logits:
            if self.model_config.text_centres:  # dense heads only (checked in __init__)
                outputs[contract.VISUAL_LOGITS] = self.visual_head(
                    visual, extra_centres=self.text_centres())
            else:
                outputs[contract.VISUAL_LOGITS] = self.visual_head(visual)
        if self.model_config.word_prediction_weight > 0 and training:
            outputs["word_logits"] = self.word_predictor(visual)
        if self.model_config.uses_text and contract.TOKENS_INPUT in inputs:
            # Without text_grad_to_tower the text branch reads v but does not train the tower.
            text_visual = (visual if self.model_config.text_grad_to_tower
                           else ops.stop_gradient(visual))
            semantic, attention = self.word_attention(text_visual, inputs[contract.TOKENS_INPUT])
            outputs[contract.SEMANTIC] = semantic
            outputs[contract.ATTENTION] = attention
            if full_logits:
                outputs[contract.SEMANTIC_LOGITS] = self.semantic_head(semantic)
                outputs[contract.FUSED_LOGITS] = self.fused_head(
                    ops.concatenate([text_visual, semantic], -1))
            if self.model_config.listing_weight > 0:
                # s0 as enrolment computes it: an empty query, every word weighs the same
                listing, _ = self.word_attention(ops.zeros_like(text_visual),
                                                 inputs[contract.TOKENS_INPUT])
                outputs["listing_visual"] = self.listing_projection(listing)
            if "word_logits" in outputs:
                outputs["word_target"] = self._word_target(inputs[contract.TOKENS_INPUT],
                                                             attention)
                outputs["word_ids"] = ops.cast(inputs[contract.TOKENS_INPUT], "int32")
        return outputs

    def _word_target(self, tokens, attention):
        """Weights [B, T] of the example's words in the distribution the visual embedding
        learns to predict: uniform over its words (`bag`) or their attention weights
        (`attention`); padding and out-of-vocabulary ids get 0; rows sum to 1 (0 without
        words). A token repeated in the text counts once per occurrence."""
        if self.model_config.word_prediction_target == "attention":
            weights = ops.stop_gradient(attention)
        else:
            weights = ops.ones_like(attention)
        first_word = contract.FIRST_VOCAB_TOKEN_ID  # below it: padding, out of vocabulary
        weights = weights * ops.cast(ops.cast(tokens, "int32") >= first_word, "float32")
        total = ops.sum(weights, axis=-1, keepdims=True)
        return weights / ops.where(total > 0, total, ops.ones_like(total))

    def _add_sampled_logits(self, y, y_pred):
        """Sampled-head training: draws one class sample (the batch's classes + a random share)
        and adds the heads' logits over it, the labels remapped into it and the prior of the
        sampled classes to `y_pred` (in place, so `compute_metrics` reuses the same sample)."""
        if "sampled_labels" in y_pred:
            return
        ids, sampled_labels = self.visual_head.sample_classes(y)
        y_pred["sampled_labels"] = sampled_labels
        y_pred["sampled_log_prior"] = ops.take(ops.convert_to_tensor(self._log_prior), ids)
        visual = y_pred[contract.EMBEDDING]
        y_pred[contract.VISUAL_LOGITS] = self.visual_head.sampled_logits(visual, ids)
        if contract.SEMANTIC in y_pred:
            semantic = y_pred[contract.SEMANTIC]
            y_pred[contract.SEMANTIC_LOGITS] = self.semantic_head.sampled_logits(semantic, ids)
            y_pred[contract.FUSED_LOGITS] = self.fused_head.sampled_logits(
                ops.concatenate([visual if self.model_config.text_grad_to_tower
                                 else ops.stop_gradient(visual), semantic], -1), ids)

    def loss_terms(self, y, y_pred):
        """Unweighted mean of each loss term over the batch: dict name -> scalar."""
        cfg = self.model_config
        log_prior = self._log_prior
        if self.sampled and contract.VISUAL_LOGITS not in y_pred:
            self._add_sampled_logits(y, y_pred)
        if "sampled_labels" in y_pred:
            y, log_prior = y_pred["sampled_labels"], y_pred["sampled_log_prior"]

        loss_type = "ce" if self.retraining else cfg.loss_type

        def long_tail(logits):
            return long_tail_losses.long_tail_cross_entropy(
                y, logits, log_prior, loss_type, cfg.tau)

        terms = {"visual": ops.mean(long_tail(y_pred[contract.VISUAL_LOGITS]))}
        if not cfg.uses_text:
            return terms
        # An example has text when its attention weights sum to 1 (0 for all-padding text).
        has_text = ops.sum(ops.stop_gradient(y_pred[contract.ATTENTION]), axis=-1)
        text_count = ops.maximum(ops.sum(has_text), 1.0)

        def text_mean(per_example):
            return ops.sum(per_example * has_text) / text_count

        terms["semantic"] = text_mean(long_tail(y_pred[contract.SEMANTIC_LOGITS]))
        terms["fused"] = ops.mean(long_tail(y_pred[contract.FUSED_LOGITS]))
        teacher = y_pred[contract.FUSED_LOGITS if cfg.distill_teacher == "fused"
                         else contract.SEMANTIC_LOGITS]
        student = y_pred[contract.VISUAL_LOGITS]
        if cfg.distill_space == "adjusted":  # in the space the long-tail loss trains in
            student, teacher = (long_tail_losses.training_logits(
                ops.cast(t, "float32"), log_prior, loss_type, cfg.tau) for t in (student, teacher))
        terms["distill"] = text_mean(long_tail_losses.distillation_loss(
            student, teacher, cfg.distill_temperature))
        terms["align"] = text_mean(long_tail_losses.cosine_alignment_loss(
            y_pred[contract.EMBEDDING], y_pred[contract.SEMANTIC], cfg.align_direction))
        if "contrast" in self._term_trackers:
            terms["contrast"] = text_mean(long_tail_losses.contrastive_loss(
                y_pred[contract.EMBEDDING], y_pred[contract.SEMANTIC], y,
                cfg.contrastive_temperature, valid=has_text))
        if "listing" in self._term_trackers:
            terms["listing"] = text_mean(long_tail_losses.listing_loss(
                y_pred["listing_visual"], y_pred[contract.EMBEDDING], y, cfg.listing_loss,
                cfg.listing_temperature))
        if "words" in self._term_trackers:
            if "word_logits" in y_pred:
                target = y_pred["word_target"]  # [B, T]
                log_probs = ops.log_softmax(ops.cast(y_pred["word_logits"], "float32"), -1)
                picked = ops.take_along_axis(log_probs, y_pred["word_ids"], axis=-1)  # [B, T]
                has_words = ops.cast(ops.sum(target, -1) > 0, "float32")
                terms["words"] = (ops.sum(-ops.sum(target * picked, -1) * has_words)
                                  / ops.maximum(ops.sum(has_words), 1.0))
            else:  # evaluation: the word predictor is a training-only head
                terms["words"] = ops.zeros(())
        return terms

    def total_loss(self, terms):
        cfg = self.model_config
        weights = {"visual": cfg.visual_weight, "semantic": cfg.semantic_weight,
                   "fused": cfg.fused_weight, "distill": cfg.distill_weight,
                   "align": cfg.align_weight, "words": cfg.word_prediction_weight,
                   "contrast": cfg.contrastive_weight, "listing": cfg.listing_weight}
        if self.retraining:  # cRT stage 2: only the visual head learns
            weights = {"visual": 1.0, "distill": cfg.crt_distill_weight}
            return sum(weights[name] * terms[name] for name in weights if name in terms)
        return sum(weights[name] * value for name, value in terms.items())

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = self.total_loss(self.loss_terms(y, y_pred))
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return _scale_loss_for_distribution(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Weighted by the batch size, like Keras' own loss tracker (a last partial or empty
        # batch must not count as much as a full one).
        batch = ops.cast(ops.shape(y_pred[contract.EMBEDDING])[0], "float32")
        for name, value in self.loss_terms(y, y_pred).items():
            self._term_trackers[name].update_state(value, sample_weight=batch)
        # Sampled training: accuracy within the step's class sample (as Partial FC reports).
        y = y_pred.get("sampled_labels", y)
        self.visual_accuracy.update_state(y, y_pred[contract.VISUAL_LOGITS])
        if contract.FUSED_LOGITS in y_pred:
            self.fused_accuracy.update_state(y, y_pred[contract.FUSED_LOGITS])
        return self.get_metrics_result()

    def _retraining_parts(self):
        parts = [self.visual_tower]
        if self.model_config.uses_text:
            parts += [self.word_attention, self.semantic_head, self.fused_head]
        if self.model_config.word_prediction_weight > 0:
            parts.append(self.word_predictor)
        if self.model_config.listing_weight > 0:
            parts.append(self.listing_projection)
        if self.model_config.text_centres and self.model_config.text_centre_source == "embedding":
            parts.append(self.text_centre_projection)
        return parts

    def start_classifier_retraining(self, seed=None):
        """cRT stage 2 (Kang et al. 2020): everything but the visual head frozen (BN in
        inference mode), the visual head re-initialised; the loss becomes plain CE on the
        visual head (the caller samples classes uniformly) plus, with text, the distillation
        from the frozen fused head."""
        for part in self._retraining_parts():
            part.trainable = False
        if hasattr(self, "text_centre_scale"):
            self.text_centre_scale.trainable = False
        self.reset_classifier(seed=seed)
        self.retraining = True

    def end_classifier_retraining(self):
        for part in self._retraining_parts():
            part.trainable = True
        if hasattr(self, "text_centre_scale"):
            self.text_centre_scale.trainable = True
        self.retraining = False

    def reset_classifier(self, seed=None):
        """Re-initialises the visual head (cRT stage 2)."""
        head = self.visual_head
        init = keras.initializers.GlorotUniform(seed=seed)
        if isinstance(head, SampledClassifierHead):
            dim, classes = head.centres.shape[1], head.centres.shape[0]
            head.centres.assign(ops.transpose(init((dim, classes))))
        elif self.model_config.free_centres:  # without free centres the kernel stays zero
            head.kernel.assign(init(head.kernel.shape))
        if head.classifier_type == "linear":
            head.bias.assign(ops.zeros(head.bias.shape))

    def get_config(self):
        # Exactly the __init__ arguments (no base Model config: this is a subclassed model).
        return {"num_classes": self.num_classes, "vocab_size": self.vocab_size,
                "class_counts": list(self.class_counts), "config": dict(self.config),
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # model.keras files written before the image size became the Transform's alone carry
        # an `image_size` model setting; the built input shape holds the size.
        config["config"] = {k: v for k, v in dict(config.get("config") or {}).items()
                            if k != "image_size"}
        return cls(**config)


def _scale_loss_for_distribution(loss):
    """Per-replica mean loss / replicas (tf.distribute sums replica gradients); else as is."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss / replicas
    return loss


def build_model(config: ModelConfig, num_classes: int, vocab_size: int, class_counts,
                max_tokens: int, image_size: int) -> SICoTModel:
    """A built `SICoTModel` for images [S, S, 3] (S = `image_size`, the Transform's) and token
    sequences [max_tokens]."""
    keras.utils.set_random_seed(config.seed)
    model = SICoTModel(num_classes, vocab_size, list(np.asarray(class_counts).tolist()),
                       config.to_dict(), name="sicot")
    model.build({contract.IMAGE_INPUT: (None, image_size, image_size, 3),
                 contract.TOKENS_INPUT: (None, max_tokens)})
    return model
