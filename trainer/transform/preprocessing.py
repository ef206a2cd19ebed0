"""tf.Transform `preprocessing_fn`: raw product records -> model-ready contract.

Runs once over the data in the TFX Transform component (and in `transform_local` for the
standalone trainer), and again inside every exported serving signature through the TFT layer,
so training and serving see exactly the same decode, resize, tokenisation and vocabularies.

Deterministic work only (compact image storage, tokenise, vocabularies, class counts); decoding
to the model's input and random augmentation belong to the trainer's tf.data input (in
parallel, and augmentation must change every epoch) and, for inference, to the serving
signature, both through `images.model_image`.

Outputs (names in `sicot.contract`):
  image_xf   bytes: the image as JPEG, longer side at most `stored_side_factor` x S
             (`images.store_images`: a JPEG that fits is kept as it is, nothing decoded).
  tokens_xf  int64 [T]: title + tags, case-folded, CJK characters split into single-character
             tokens, punctuation dropped; 0 = padding, 1 = out of vocabulary, 2.. = vocab.
  label_xf   int64: id in the frequency-sorted label vocabulary; unseen labels -> num_classes.
  band_xf    bytes: many | medium | few, from the training count of the example's class.
Vocabulary files: `tokens`, `label` and `label_counts` ('count label' lines, same order as
`label`): the class counts the trainer uses for priors and the evaluator for bands; and
`image_size` (one line, S): the model input side the images were stored for.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from sicot import contract
from sicot.trainer.transform import images

# Han, Hiragana and Katakana are written without spaces between words: each character becomes
# a token of its own (character unigrams are the usual bag-of-words unit for CJK titles).
_CJK_CHARACTER = r"([\p{Han}\p{Hiragana}\p{Katakana}])"
_PUNCTUATION_OR_SYMBOL = r"[\p{P}\p{S}]+"


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    """Settings of `preprocessing_fn`, passed as the Transform component's custom_config.

    Attributes:
      image_size: side S of the square model input, pixels.
      stored_side_factor: images are stored with their longer side at most this x S (room for
        random resized crops); smaller images are not enlarged.
      max_tokens: T, the number of title + tag tokens kept (the rest are cut).
      vocab_size: at most this many tokens in the vocabulary (most frequent first).
      min_token_count: tokens seen fewer times in training are out of vocabulary.
      band_edges: (low, high): few < low <= medium <= high < many training images per class.
    """

    image_size: int = 64
    stored_side_factor: float = images.STORED_SIDE_FACTOR
    max_tokens: int = 32
    vocab_size: int = 50_000
    min_token_count: int = 2
    band_edges: tuple[int, int] = contract.DEFAULT_BAND_EDGES

    def __post_init__(self):
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.stored_side_factor < 1.0:
            raise ValueError(f"stored_side_factor must be >= 1, got {self.stored_side_factor}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.vocab_size < 1 or self.min_token_count < 1:
            raise ValueError(
                f"vocab_size and min_token_count must be >= 1, got {self.vocab_size}, "
                f"{self.min_token_count}")
        low, high = self.band_edges
        if not 0 < low <= high:
            raise ValueError(f"band_edges must be 0 < low <= high, got {self.band_edges}")
        object.__setattr__(self, "band_edges", (int(low), int(high)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["band_edges"] = list(self.band_edges)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "TransformConfig":
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TransformConfig keys {unknown}; known: {sorted(known)}")
        if "band_edges" in d:
            d["band_edges"] = tuple(d["band_edges"])
        return cls(**d)


def _dense_scalar(x, default: str = ""):
    """A raw feature as a dense [batch] string tensor, whatever the schema made of it.

    A schema inferred by SchemaGen may parse a single-valued feature as a SparseTensor
    [batch, None] (no shape) or a dense [batch, 1] tensor (inferred shape); tests and the local
    transform parse it as dense [batch].
    """
    import tensorflow as tf

    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default)
    if x.shape.rank == 2:
        x = tf.squeeze(x, axis=1)
    return x


def tokenize(title, tags):
    """Title and '|'-joined tags [batch] -> RaggedTensor of string tokens [batch, None]."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    text = tf.strings.join([title, tags], separator=" ")
    text = tf_text.case_fold_utf8(text)
    text = tf.strings.regex_replace(text, _CJK_CHARACTER, r" \1 ")
    text = tf.strings.regex_replace(text, _PUNCTUATION_OR_SYMBOL, " ")
    return tf_text.WhitespaceTokenizer().tokenize(text)


def preprocessing_fn(inputs, custom_config=None):
    """tf.Transform entry point (TFX Transform: `sicot.trainer.transform.preprocessing.preprocessing_fn`)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    config = TransformConfig.from_dict(custom_config)
    outputs = {}

    image = _dense_scalar(inputs[contract.IMAGE_KEY])
    outputs[contract.IMAGE_XF] = images.store_images(
        image, images.stored_side(config.image_size, config.stored_side_factor))
    # Records the model input side S the images were stored for (read by the trainer).
    tft.vocabulary(tf.fill(tf.shape(image), tf.constant(str(config.image_size))),
                   vocab_filename=contract.IMAGE_SIZE_VOCAB_NAME, name="image_size")

    tokens = tokenize(_dense_scalar(inputs[contract.TITLE_KEY]),
                      _dense_scalar(inputs[contract.TAGS_KEY]))
    tokens = tokens[:, :config.max_tokens]
    token_ids = tft.compute_and_apply_vocabulary(
        tokens.to_sparse(), top_k=config.vocab_size,
        frequency_threshold=config.min_token_count, default_value=-1,
        vocab_filename=contract.TOKEN_VOCAB_NAME, name="token_vocabulary")
    shifted = tf.where(token_ids.values < 0,
                       tf.constant(contract.OOV_TOKEN_ID, tf.int64),
                       token_ids.values + contract.FIRST_VOCAB_TOKEN_ID)
    ragged_ids = tf.RaggedTensor.from_sparse(
        tf.SparseTensor(token_ids.indices, shifted, token_ids.dense_shape))
    outputs[contract.TOKENS_XF] = ragged_ids.to_tensor(
        default_value=contract.PAD_TOKEN_ID, shape=[None, config.max_tokens])

    label = _dense_scalar(inputs[contract.LABEL_KEY])
    label_id = tft.compute_and_apply_vocabulary(
        label, num_oov_buckets=1, vocab_filename=contract.LABEL_VOCAB_NAME,
        name="label_vocabulary")
    # Same analyzer input, same ordering (frequency, then key): line i of `label_counts` is
    # class i. The trainer checks the two files agree.
    tft.vocabulary(label, store_frequency=True, vocab_filename=contract.LABEL_COUNTS_VOCAB_NAME,
                   name="label_counts")
    outputs[contract.LABEL_XF] = label_id

    # Ids follow descending training frequency, so each band is a range of ids: classes with
    # more than `high` images come first, then those with at least `low`
    # (`contract.band_of_count`, the same rule for one class).
    _, counts = tft.count_per_key(label, name="class_counts")
    low, high = config.band_edges
    num_many = tf.reduce_sum(tf.cast(counts > high, tf.int64))
    num_many_or_medium = tf.reduce_sum(tf.cast(counts >= low, tf.int64))
    outputs[contract.BAND_XF] = tf.where(
        label_id < num_many, tf.constant(contract.MANY),
        tf.where(label_id < num_many_or_medium, tf.constant(contract.MEDIUM),
                 tf.constant(contract.FEW)))
    return outputs
