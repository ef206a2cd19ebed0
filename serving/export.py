"""Export a trained SICoT model + the tf.Transform graph as one SavedModel for TF Serving / TFMA.

Signatures (all take [None] strings; the TFT layer repeats the training-time decode, resize
and tokenisation, so serving sees exactly the training features):
  serving_default      image (encoded JPEG/PNG) -> visual head (image-only query)
  serving_image_text   image, title, tags       -> fused head (image + text query)
  serving_examples     examples (serialized tf.Example) -> visual head
  transform_features   examples -> transformed features (TFMA preprocessing function)
  eval_examples        examples -> {image_only, image_text}: class probabilities [B, C]
The first three return `classes` (top-k class names), `class_ids` [B, k], `scores` [B, k]
(softmax of the head's plain logits: no prior adjustment at inference) and `embedding`.
Raw features absent at serving (label, title, tags, record_id) are filled with ''.
"""
from __future__ import annotations

from sicot.trainer import features

SIGNATURES = ("serving_default", "serving_image_text", "serving_examples",
              "transform_features", "eval_examples")


def _parse_spec(raw_feature_spec):
    """The raw spec with '' defaults for everything but the image (absent at serving)."""
    import tensorflow as tf

    spec = {}
    for key, feature in raw_feature_spec.items():
        if isinstance(feature, tf.io.FixedLenFeature) and key != features.IMAGE_KEY:
            default = tf.fill(feature.shape, "") if feature.shape else ""
            spec[key] = tf.io.FixedLenFeature(feature.shape, feature.dtype,
                                              default_value=default)
        else:
            spec[key] = feature
    return spec


def _raw_from_strings(values, raw_feature_spec):
    """{key: [B] string} -> raw features shaped as the Transform's raw spec expects."""
    import tensorflow as tf

    batch = tf.shape(values[features.IMAGE_KEY])
    raw = {}
    for key, feature in raw_feature_spec.items():
        value = values.get(key)
        if value is None:
            value = tf.fill(batch, "")
        if isinstance(feature, tf.io.FixedLenFeature):
            if len(feature.shape) == 1:
                value = tf.expand_dims(value, 1)
            raw[key] = value
        else:  # VarLenFeature: one value per example
            dense = tf.expand_dims(value, 1)
            n = tf.shape(dense, out_type=tf.int64)[0]
            indices = tf.stack([tf.range(n), tf.zeros([n], tf.int64)], axis=1)
            raw[key] = tf.SparseTensor(indices, value, tf.stack([n, tf.constant(1, tf.int64)]))
    return raw


def export_serving_model(model, tf_transform_output, export_dir: str, top_k: int = 5) -> str:
    """Writes the SavedModel with the signatures above to `export_dir`; returns it."""
    import keras
    import tensorflow as tf

    from sicot.trainer.sicot_model import IMAGE_INPUT, TOKENS_INPUT

    tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = dict(tf_transform_output.raw_feature_spec())
    parse_spec = _parse_spec(raw_spec)
    class_names = [c.decode("utf-8") if isinstance(c, bytes) else c
                   for c in tf_transform_output.vocabulary_by_name(features.LABEL_VOCAB_NAME)]
    if len(class_names) != model.num_classes:
        raise ValueError(f"label vocabulary has {len(class_names)} classes, model has "
                         f"{model.num_classes}")
    k = min(int(top_k), len(class_names))
    class_table = tf.constant(class_names, dtype=tf.string)

    def transform(raw):
        return tft_layer(raw)

    def model_inputs(transformed, with_text):
        inputs = {IMAGE_INPUT: tf.cast(transformed[features.IMAGE_XF], tf.float32)}
        if with_text:
            inputs[TOKENS_INPUT] = tf.cast(transformed[features.TOKENS_XF], tf.int32)
        return inputs

    def head_logits(outputs, with_text):
        if with_text and "fused_logits" in outputs:
            return outputs["fused_logits"]
        return outputs["visual_logits"]

    def predictions(transformed, with_text):
        outputs = model(model_inputs(transformed, with_text), training=False)
        probs = tf.nn.softmax(tf.cast(head_logits(outputs, with_text), tf.float32), axis=-1)
        scores, ids = tf.math.top_k(probs, k=k)
        return {"classes": tf.gather(class_table, ids), "class_ids": tf.cast(ids, tf.int64),
                "scores": scores, "embedding": tf.cast(outputs["embedding"], tf.float32)}

    def parse(examples):
        return tf.io.parse_example(examples, parse_spec)

    def serve_image(image):
        return predictions(transform(_raw_from_strings({features.IMAGE_KEY: image}, raw_spec)),
                           with_text=False)

    def serve_image_text(image, title, tags):
        raw = _raw_from_strings({features.IMAGE_KEY: image, features.TITLE_KEY: title,
                                 features.TAGS_KEY: tags}, raw_spec)
        return predictions(transform(raw), with_text=True)

    def serve_examples(examples):
        return predictions(transform(parse(examples)), with_text=False)

    def transform_features(examples):
        return transform(parse(examples))

    def eval_examples(examples):
        transformed = transform(parse(examples))
        image_only = model(model_inputs(transformed, False), training=False)
        with_text = model(model_inputs(transformed, True), training=False)
        return {"image_only": tf.nn.softmax(head_logits(image_only, False), axis=-1),
                "image_text": tf.nn.softmax(head_logits(with_text, True), axis=-1)}

    def strings(name):
        return tf.TensorSpec([None], tf.string, name=name)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tft_layer)
    archive.add_endpoint("serving_default", serve_image, input_signature=[strings("image")])
    archive.add_endpoint("serving_image_text", serve_image_text,
                         input_signature=[strings("image"), strings("title"), strings("tags")])
    archive.add_endpoint("serving_examples", serve_examples,
                         input_signature=[strings("examples")])
    archive.add_endpoint("transform_features", transform_features,
                         input_signature=[strings("examples")])
    archive.add_endpoint("eval_examples", eval_examples, input_signature=[strings("examples")])
    archive.write_out(export_dir, verbose=False)
    return export_dir
