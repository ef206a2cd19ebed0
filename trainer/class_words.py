"""Class word tables: the words that describe each class, from its training titles and tags.

For class c with n_c training examples, word w scores
    score(c, w) = df(c, w) * idf(w),   df(c, w) = (examples of c whose text has w) / n_c,
    idf(w) = log((C + 1) / (classes whose text has w + 1))
so promo words and other products' keywords (spread over many classes, or rare within one
class) score low and the attribute words a class's sellers agree on score high. The table keeps
the top K words per class with weights normalised to sum to 1 (all zero for a class without
text). Built once before training with numpy, O(N T) memory over (class, word) pairs, so it
also works for a million classes.
"""
from __future__ import annotations

import numpy as np

from sicot import contract


def class_word_table(tokens, labels, num_classes: int, top_k: int):
    """(ids int32 [C, K], weights float32 [C, K]) from token ids [N, T] and labels [N].

    Token ids below `contract.FIRST_VOCAB_TOKEN_ID` (padding, out of vocabulary) are ignored;
    labels outside [0, C) are ignored. Unused slots have id 0 and weight 0.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if tokens.ndim != 2 or tokens.shape[0] != labels.shape[0]:
        raise ValueError(f"class_word_table: tokens {tokens.shape} and labels {labels.shape} "
                         f"do not match (want [N, T] and [N])")
    if top_k < 1:
        raise ValueError(f"class_word_table: top_k={top_k} must be >= 1")
    ids = np.zeros((num_classes, top_k), np.int32)
    weights = np.zeros((num_classes, top_k), np.float32)
    keep = (labels >= 0) & (labels < num_classes)
    tokens, labels = tokens[keep], labels[keep]
    class_examples = np.bincount(labels, minlength=num_classes).astype(np.float64)
    rows = np.repeat(labels, tokens.shape[1])
    words = tokens.reshape(-1)
    valid = words >= contract.FIRST_VOCAB_TOKEN_ID
    example = np.repeat(np.arange(len(labels)), tokens.shape[1])[valid]
    rows, words = rows[valid], words[valid]
    if words.size == 0:
        return ids, weights
    vocab = int(words.max()) + 1
    # One count per (example, word): a word repeated in one title counts once.
    per_example = np.unique(example * vocab + words)
    rows = labels[per_example // vocab]
    words = per_example % vocab
    pair, counts = np.unique(rows * vocab + words, return_counts=True)
    pair_class, pair_word = pair // vocab, pair % vocab
    classes_with_word = np.bincount(pair_word, minlength=vocab).astype(np.float64)
    idf = np.log((num_classes + 1.0) / (classes_with_word + 1.0))
    score = counts / class_examples[pair_class] * idf[pair_word]
    # Sort by class, then by descending score; take the first K of each class.
    order = np.lexsort((-score, pair_class))
    pair_class, pair_word, score = pair_class[order], pair_word[order], score[order]
    starts = np.searchsorted(pair_class, np.arange(num_classes))
    rank = np.arange(len(pair_class)) - starts[pair_class]
    top = (rank < top_k) & (score > 0)
    ids[pair_class[top], rank[top]] = pair_word[top]
    weights[pair_class[top], rank[top]] = score[top]
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    return ids, weights


def read_tokens_and_labels(file_pattern, tf_transform_output):
    """(tokens int64 [N, T], labels int64 [N]) of the transformed examples (one pass)."""
    import tensorflow as tf

    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise FileNotFoundError(f"no transformed examples match {patterns}")
    spec = tf_transform_output.transformed_feature_spec()
    parse_spec = {k: spec[k] for k in (contract.TOKENS_XF, contract.LABEL_XF)}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096).map(
        lambda r: tf.io.parse_example(r, parse_spec))
    tokens, labels = [], []
    for batch in ds.as_numpy_iterator():
        tokens.append(batch[contract.TOKENS_XF])
        labels.append(batch[contract.LABEL_XF].reshape(-1))
    return np.concatenate(tokens), np.concatenate(labels)
