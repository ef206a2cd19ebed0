"""The contract: every name that crosses a boundary between data, trainer, pipeline and serving.

One module, imported by `sicot.data`, `sicot.trainer`, `sicot.pipeline`, `sicot.serving` and
`bench/`, so each name is spelled once. It imports nothing from the project (and nothing heavy):
it sits below every package in the import graph (`tests/test_import_layers.py`).

Raw `tf.Example` (written by `sicot.data.importer`, read by ExampleGen and the serving
signatures); every feature is a scalar bytes feature:
  image      encoded JPEG or PNG bytes
  title      UTF-8 title ('' when absent)
  tags       UTF-8 tags joined by '|' ('' when absent)
  label      UTF-8 class name (required in train/eval/test data; absent at serving)
  record_id  '<manifest file>:<line number>' of the source record, for tracing

Transformed features (`sicot.trainer.transform.preprocessing.preprocessing_fn`):
  image_xf   bytes: the image as JPEG, longer side at most 2 x S (`trainer/images.store_images`);
             decoded to [S, S, 3] by the trainer's input and the serving signatures
  tokens_xf  int64 [T] token ids of title + tags: 0 = padding, 1 = out of vocabulary,
             2.. = vocabulary entries (vocabulary file `tokens`)
  label_xf   int64 class id: position in the frequency-sorted vocabulary file `label`
             (0 = most frequent class); `num_classes` for a label unseen in training
  band_xf    bytes 'many' | 'medium' | 'few' by the training count of the example's class

Model (`sicot.trainer.model.sicot_model.SICoTModel`): inputs `image`, `tokens`; outputs
`visual_logits`, `embedding`, and with text `semantic_logits`, `fused_logits`, `semantic`,
`attention`.

Exported SavedModel (`sicot.trainer.export.saved_model`); every input is a [None] string tensor:
  serving_default      image                    -> visual head (image-only query)
  serving_image_text   image, title, tags       -> fused head (image + text query)
  serving_examples     examples (serialized tf.Example) -> visual head
  transform_features   examples -> transformed features (TFMA preprocessing function)
  eval_examples        examples -> {image_only, image_text}: class probabilities [B, C]
The first three return `classes`, `class_ids`, `scores` (top k) and `embedding`.
"""
from __future__ import annotations

from typing import Sequence

# -- dataset splits (manifest files, ExampleGen output splits, Transform and Evaluator inputs) ---
TRAIN_SPLIT, EVAL_SPLIT, TEST_SPLIT = "train", "eval", "test"
SPLITS = (TRAIN_SPLIT, EVAL_SPLIT, TEST_SPLIT)

# -- raw features (tf.Example keys; also the serving signatures' input names) ------------------
IMAGE_KEY = "image"
TITLE_KEY = "title"
TAGS_KEY = "tags"
LABEL_KEY = "label"
RECORD_ID_KEY = "record_id"

RAW_FEATURE_KEYS = (IMAGE_KEY, TITLE_KEY, TAGS_KEY, LABEL_KEY, RECORD_ID_KEY)
TEXT_KEYS = (TITLE_KEY, TAGS_KEY)
TAG_SEPARATOR = "|"

# Features the Transform derives (no raw counterpart): title + tags tokens, the class band.
TOKENS_KEY = "tokens"
BAND_KEY = "band"

# -- Transform outputs ---------------------------------------------------------------------------
# Vocabulary files written by Transform (tft.TFTransformOutput.vocabulary_file_by_name).
TOKEN_VOCAB_NAME = TOKENS_KEY
LABEL_VOCAB_NAME = LABEL_KEY
LABEL_COUNTS_VOCAB_NAME = "label_counts"  # lines 'count label', same order as LABEL_VOCAB_NAME
IMAGE_SIZE_VOCAB_NAME = "image_size"  # one line: the model input side S the images were stored for

PAD_TOKEN_ID = 0
OOV_TOKEN_ID = 1
FIRST_VOCAB_TOKEN_ID = 2


def transformed_name(key: str) -> str:
    return key + "_xf"


IMAGE_XF = transformed_name(IMAGE_KEY)
TOKENS_XF = transformed_name(TOKENS_KEY)
LABEL_XF = transformed_name(LABEL_KEY)
BAND_XF = transformed_name(BAND_KEY)

# -- class frequency bands -----------------------------------------------------------------------
MANY, MEDIUM, FEW = "many", "medium", "few"
BANDS = (MANY, MEDIUM, FEW)
OVERALL = "overall"  # the slice of every example, reported beside the bands
# (low, high): few < low <= medium <= high < many training images per class. The Transform's
# `TransformConfig.band_edges` defaults to these; everything that evaluates a model reads the
# edges (and the class counts) from the Transform artifact.
DEFAULT_BAND_EDGES = (20, 100)


def band_of_count(count: int, band_edges: Sequence[int] = DEFAULT_BAND_EDGES) -> str:
    """The band of a class with `count` training images (the rule `preprocessing_fn` applies)."""
    low, high = band_edges
    if count > high:
        return MANY
    if count >= low:
        return MEDIUM
    return FEW


# -- model inputs and outputs (SICoTModel's call dicts) ----------------------------------------
IMAGE_INPUT = IMAGE_KEY  # float [B, S, S, 3] 0..255
TOKENS_INPUT = TOKENS_KEY  # int [B, T]

VISUAL_LOGITS = "visual_logits"
SEMANTIC_LOGITS = "semantic_logits"
FUSED_LOGITS = "fused_logits"
EMBEDDING = "embedding"  # the visual embedding v (also a serving output)
SEMANTIC = "semantic"
ATTENTION = "attention"

# -- exported signatures -------------------------------------------------------------------------
# TF Serving answers a request that names no signature with this one (a protocol fact, used
# by the generic server); the image-only query is exported under it.
DEFAULT_SIGNATURE = "serving_default"
IMAGE_SIGNATURE = DEFAULT_SIGNATURE
IMAGE_TEXT_SIGNATURE = "serving_image_text"
EXAMPLES_SIGNATURE = "serving_examples"
TRANSFORM_SIGNATURE = "transform_features"
EVAL_SIGNATURE = "eval_examples"
SIGNATURES = (IMAGE_SIGNATURE, IMAGE_TEXT_SIGNATURE, EXAMPLES_SIGNATURE, TRANSFORM_SIGNATURE,
              EVAL_SIGNATURE)
# Visual search over a model's catalogue items (present when `sicot enroll` gave it some).
SEARCH_IMAGE_SIGNATURE = "search_image"
SEARCH_IMAGE_TEXT_SIGNATURE = "search_image_text"
SEARCH_SIGNATURES = (SEARCH_IMAGE_SIGNATURE, SEARCH_IMAGE_TEXT_SIGNATURE)

EXAMPLES_INPUT = "examples"  # serialized tf.Example [None]

# Outputs of the three query signatures.
CLASSES_OUTPUT = "classes"  # top-k class names [B, k]
CLASS_IDS_OUTPUT = "class_ids"  # [B, k] int64
SCORES_OUTPUT = "scores"  # softmax of the head's plain logits [B, k]
EMBEDDING_OUTPUT = EMBEDDING
# outputs of the search signatures, best first: [B, k] strings and cosine similarities
ITEM_IDS_OUTPUT = "item_ids"
ITEM_LABELS_OUTPUT = "labels"
ITEM_SCORES_OUTPUT = SCORES_OUTPUT

# -- query modes: what a shopper sends; also the outputs of EVAL_SIGNATURE ----------------------
IMAGE_ONLY = "image_only"
IMAGE_TEXT = "image_text"
QUERY_MODES = (IMAGE_ONLY, IMAGE_TEXT)
QUERY_MODE_SIGNATURES = {IMAGE_ONLY: IMAGE_SIGNATURE, IMAGE_TEXT: IMAGE_TEXT_SIGNATURE}

# A TFX Model artifact (the Trainer's, and the pipeline's Enroller's, laid out alike): the
# SavedModel in <uri>/Format-Serving (what the Evaluator, Canary and Pusher read; TFX's
# path_constants.SERVING_MODEL_DIR), the files a later warm start reads in <uri>/warm_start.
SERVING_MODEL_DIR = "Format-Serving"
WARM_START_DIR = "warm_start"
