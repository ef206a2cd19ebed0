"""Feature keys and the transformed-name rule: the one module both the pipeline and the trainer import.

Raw `tf.Example` (written by `sicot.data.importer`, read by ExampleGen and the serving
signatures); every feature is a scalar bytes feature:
  image      encoded JPEG or PNG bytes
  title      UTF-8 title ('' when absent)
  tags       UTF-8 tags joined by '|' ('' when absent)
  label      UTF-8 class name (required in train/eval/test data; absent at serving)
  record_id  '<manifest file>:<line number>' of the source record, for tracing

Transformed features (`sicot.trainer.preprocessing.preprocessing_fn`):
  image_xf   int64 [S, S, 3] pixel values 0..255 (deterministic decode + resize, RGB)
  tokens_xf  int64 [T] token ids of title + tags: 0 = padding, 1 = out of vocabulary,
             2.. = vocabulary entries (vocabulary file `tokens`)
  label_xf   int64 class id: position in the frequency-sorted vocabulary file `label`
             (0 = most frequent class); `num_classes` for a label unseen in training
  band_xf    bytes 'many' | 'medium' | 'few' by the training count of the example's class
"""

IMAGE_KEY = "image"
TITLE_KEY = "title"
TAGS_KEY = "tags"
LABEL_KEY = "label"
RECORD_ID_KEY = "record_id"

RAW_FEATURE_KEYS = (IMAGE_KEY, TITLE_KEY, TAGS_KEY, LABEL_KEY, RECORD_ID_KEY)
TEXT_KEYS = (TITLE_KEY, TAGS_KEY)
TAG_SEPARATOR = "|"

# Vocabulary files written by Transform (tft.TFTransformOutput.vocabulary_file_by_name).
TOKEN_VOCAB_NAME = "tokens"
LABEL_VOCAB_NAME = "label"
LABEL_COUNTS_VOCAB_NAME = "label_counts"  # lines 'count label', same order as LABEL_VOCAB_NAME

PAD_TOKEN_ID = 0
OOV_TOKEN_ID = 1
FIRST_VOCAB_TOKEN_ID = 2

BANDS = ("many", "medium", "few")


def transformed_name(key: str) -> str:
    return key + "_xf"


IMAGE_XF = transformed_name(IMAGE_KEY)
TOKENS_XF = transformed_name("tokens")
LABEL_XF = transformed_name(LABEL_KEY)
BAND_XF = transformed_name("band")
