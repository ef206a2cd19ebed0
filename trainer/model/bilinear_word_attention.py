"""`BilinearWordAttention`: pool the seller's words that match the image."""
from __future__ import annotations

import math

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="sicot")
class BilinearWordAttention(layers.Layer):
    """Low-rank bilinear attention of the visual embedding over noisy title/tag words.

    Our reconstruction of SICoT's word attention (the paper gives no equations):
      e_i = Embedding(token_i)
      a_i = softmax_i( (U v) . (W e_i) / sqrt(r) )   over non-padding tokens only
      s   = sum_i a_i P e_i
    The low-rank factorisation U, W (rank r) of the bilinear form v^T M e_i keeps the cost at
    O(r (d_v + d_e)) per word (Kim et al. 2017, low-rank bilinear pooling). Words that the image
    does not support get small a_i, so noisy seller text is down-weighted. An all-padding text
    gives a_i = 0 everywhere and s = 0 (the softmax is guarded, no NaN).

    Args:
      vocab_size: int. Number of token ids (0 = padding, 1 = OOV, 2.. = vocabulary).
      token_dim: int. Size of the word embeddings e_i.
      rank: int. Rank r of the bilinear score.
      output_dim: int. Size of the semantic embedding s (= the visual embedding size, so that
        v and s can be aligned).
      use_attention: bool. False: s = P (mean of e_i over non-padding tokens) (ablation).

    Call arguments:
      visual: float [B, D_v] visual embedding v.
      tokens: int [B, T] token ids, 0 = padding.

    Returns:
      (s [B, output_dim], attention weights a [B, T]; rows sum to 1, or to 0 for empty text).

    Example:
    >>> layer = BilinearWordAttention(vocab_size=10, token_dim=4, rank=2, output_dim=3)
    >>> s, a = layer(keras.ops.ones((2, 5)), keras.ops.array([[2, 3, 0], [0, 0, 0]]))
    >>> s.shape, a.shape
    ((2, 3), (2, 3))
    """

    def __init__(self, vocab_size, token_dim=64, rank=32, output_dim=128, use_attention=True,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (("vocab_size", vocab_size), ("token_dim", token_dim),
                            ("rank", rank), ("output_dim", output_dim)):
            if int(value) < 1:
                raise ValueError(f"BilinearWordAttention: {name}={value!r} must be >= 1")
        self.vocab_size = int(vocab_size)
        self.token_dim = int(token_dim)
        self.rank = int(rank)
        self.output_dim = int(output_dim)
        self.use_attention = bool(use_attention)

    def build(self, visual_shape, tokens_shape=None):
        self._embedding = layers.Embedding(self.vocab_size, self.token_dim, name="embedding")
        self._embedding.build((None, None))
        self._visual_query = layers.Dense(self.rank, use_bias=False, name="visual_query")  # U
        self._visual_query.build((None, visual_shape[-1]))
        self._word_key = layers.Dense(self.rank, use_bias=False, name="word_key")  # W
        self._word_key.build((None, None, self.token_dim))
        self._word_value = layers.Dense(self.output_dim, name="word_value")  # P
        self._word_value.build((None, None, self.token_dim))
        self.built = True

    def embed_tokens(self, tokens):
        """Word embeddings e_i of token ids (any shape) -> [..., token_dim]; shared with the
        text-composed class centres of the visual head."""
        return self._embedding(ops.cast(tokens, "int32"))

    def call(self, visual, tokens):
        tokens = ops.cast(tokens, "int32")
        mask = ops.cast(ops.not_equal(tokens, 0), "float32")  # [B, T]
        words = self._embedding(tokens)  # [B, T, E]
        if self.use_attention:
            query = self._visual_query(visual)  # [B, r]
            keys = self._word_key(words)  # [B, T, r]
            scores = ops.einsum("br,btr->bt", query, keys) / math.sqrt(self.rank)
            # Masked softmax, guarded: padding gets exp(.)*0 = 0; an all-padding row has
            # denominator 0 and is divided by 1 instead, giving all-zero weights (no NaN).
            scores = ops.where(mask > 0, scores, ops.full_like(scores, -1e9))
            scores = scores - ops.stop_gradient(ops.max(scores, axis=-1, keepdims=True))
            weights = ops.exp(scores) * mask
        else:
            weights = mask
        total = ops.sum(weights, axis=-1, keepdims=True)
        weights = weights / ops.where(total > 0, total, ops.ones_like(total))
        values = self._word_value(words)  # [B, T, D]
        semantic = ops.einsum("bt,btd->bd", weights, values)
        return semantic, weights

    def compute_output_shape(self, visual_shape, tokens_shape):
        return (visual_shape[0], self.output_dim), tuple(tokens_shape)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, token_dim=self.token_dim, rank=self.rank,
                      output_dim=self.output_dim, use_attention=self.use_attention)
        return config
