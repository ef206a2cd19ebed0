"""What the rest of the trainer reads from a Transform's output: the class names with their
training counts, and the model's input shapes (image side, token count, token ids)."""
from __future__ import annotations

from sicot import contract
from sicot.trainer.transform import images


def read_class_counts(tf_transform_output):
    """(class names, training counts) in label-id order, from the `label_counts` vocabulary."""
    names = [n.decode("utf-8") if isinstance(n, bytes) else n
             for n in tf_transform_output.vocabulary_by_name(contract.LABEL_VOCAB_NAME)]
    path = tf_transform_output.vocabulary_file_by_name(contract.LABEL_COUNTS_VOCAB_NAME)
    import tensorflow as tf

    counts_by_name = {}
    with tf.io.gfile.GFile(path, "rb") as f:
        for line_number, line in enumerate(f, 1):
            line = line.rstrip(b"\n")
            if not line:
                continue
            count, _, name = line.partition(b" ")
            try:
                counts_by_name[name.decode("utf-8")] = int(float(count))
            except ValueError:
                raise ValueError(f"{path}:{line_number}: expected 'count label', got {line!r}")
    missing = [n for n in names if n not in counts_by_name]
    if missing:
        raise ValueError(f"{path}: no count for classes {missing[:5]} of the label vocabulary")
    return names, [counts_by_name[n] for n in names]


def model_shapes(tf_transform_output):
    """(image size, max tokens, token id count) from the transformed feature spec."""
    spec = tf_transform_output.transformed_feature_spec()
    image_size = images.transform_image_size(tf_transform_output)
    max_tokens = int(spec[contract.TOKENS_XF].shape[0])
    vocab_size = (tf_transform_output.vocabulary_size_by_name(contract.TOKEN_VOCAB_NAME)
                  + contract.FIRST_VOCAB_TOKEN_ID)
    return image_size, max_tokens, vocab_size
