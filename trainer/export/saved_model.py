"""Export a trained SICoT model + the tf.Transform graph as one SavedModel for TF Serving / TFMA.

The trainer writes it (`task.run_fn`); `sicot.serving` serves it and reads its signatures from
the SavedModel alone, so serving never imports this module. Signature, input and output names
are in `sicot.contract`.

Signatures (all take [None] strings; the TFT layer repeats the Transform (compact JPEG storage,
tokenisation), then `images.model_images` the decode + resize of the trainer's input, so serving
sees exactly the training features):
  serving_default      image (encoded JPEG/PNG) -> visual head (image-only query)
  serving_image_text   image, title, tags       -> fused head (image + text query)
  serving_examples     examples (serialized tf.Example) -> visual head
  transform_features   examples -> transformed features (TFMA preprocessing function)
  eval_examples        examples -> {image_only, image_text}: class probabilities [B, C]
and, when the model has catalogue items (`sicot enroll`), visual search:
  search_image         image                    -> the catalogue items most like the photo
  search_image_text    image, title, tags       -> the same with the query's text
which return `item_ids`, `labels` (strings [B, k]) and `scores` (cosine similarity [B, k]),
best first, k = min(search_top_k, items): exact search over every item, inside the graph
(item vectors: `sicot.data.search_index`).
The first three return `classes` (top-k class names), `class_ids` [B, k], `scores` [B, k]
(softmax of the head's plain logits: no prior adjustment at inference) and `embedding`.
Raw features absent at serving (label, title, tags, record_id) are filled with ''.
"""
from __future__ import annotations

import json
import os

from sicot import contract
from sicot.trainer.transform import images

# The Transform's `label_counts` ('count label' lines), copied beside the model.
LABEL_COUNTS_FILE = os.path.join("assets.extra", contract.LABEL_COUNTS_VOCAB_NAME)
# Every class name in class-id order (the Transform's labels, then any enrolled ones): the
# Transform's assets/label vocabulary names the trained classes only.
CLASS_NAMES_FILE = os.path.join("assets.extra", "class_names.json")
SEARCH_TOP_K = 10

def _parse_spec(raw_feature_spec):
    """The raw spec with '' defaults for everything but the image (absent at serving)."""
    import tensorflow as tf

    spec = {}
    for key, feature in raw_feature_spec.items():
        if isinstance(feature, tf.io.FixedLenFeature) and key != contract.IMAGE_KEY:
            default = tf.fill(feature.shape, "") if feature.shape else ""
            spec[key] = tf.io.FixedLenFeature(feature.shape, feature.dtype,
                                              default_value=default)
        else:
            spec[key] = feature
    return spec


def _raw_from_strings(values, raw_feature_spec):
    """{key: [B] string} -> raw features shaped as the Transform's raw spec expects."""
    import tensorflow as tf

    batch = tf.shape(values[contract.IMAGE_KEY])
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


def export_serving_model(model, tf_transform_output, export_dir: str, top_k: int = 5,
                         class_names=None, search_items=None,
                         search_top_k: int = SEARCH_TOP_K) -> str:
    """Writes the SavedModel with the signatures above to `export_dir`; returns it.

    `class_names` default to the Transform's label vocabulary (an enrolled model has more);
    `search_items` (a `sicot.data.search_index.SearchItems`) adds the search signatures."""
    import keras
    import tensorflow as tf

    tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = dict(tf_transform_output.raw_feature_spec())
    parse_spec = _parse_spec(raw_spec)
    if class_names is None:
        class_names = tf_transform_output.vocabulary_by_name(contract.LABEL_VOCAB_NAME)
    class_names = [c.decode("utf-8") if isinstance(c, bytes) else c for c in class_names]
    if len(class_names) != model.num_classes:
        raise ValueError(f"label vocabulary has {len(class_names)} classes, model has "
                         f"{model.num_classes}")
    k = min(int(top_k), len(class_names))
    class_table = tf.constant(class_names, dtype=tf.string)

    def transform(raw):
        return tft_layer(raw)

    image_size = images.transform_image_size(tf_transform_output)

    def model_inputs(transformed, with_text):
        # The decode + resize of the trainer's eval input (images.model_image), in the graph.
        inputs = {contract.IMAGE_INPUT: images.model_images(transformed[contract.IMAGE_XF], image_size)}
        if with_text:
            inputs[contract.TOKENS_INPUT] = tf.cast(transformed[contract.TOKENS_XF], tf.int32)
        return inputs

    def head_logits(outputs, with_text):
        if with_text and contract.FUSED_LOGITS in outputs:
            return outputs[contract.FUSED_LOGITS]
        return outputs[contract.VISUAL_LOGITS]

    def predictions(transformed, with_text):
        outputs = model(model_inputs(transformed, with_text), training=False)
        probs = tf.nn.softmax(tf.cast(head_logits(outputs, with_text), tf.float32), axis=-1)
        scores, ids = tf.math.top_k(probs, k=k)
        return {contract.CLASSES_OUTPUT: tf.gather(class_table, ids),
                contract.CLASS_IDS_OUTPUT: tf.cast(ids, tf.int64),
                contract.SCORES_OUTPUT: scores,
                contract.EMBEDDING_OUTPUT: tf.cast(outputs[contract.EMBEDDING], tf.float32)}

    def parse(examples):
        return tf.io.parse_example(examples, parse_spec)

    def serve_image(image):
        return predictions(transform(_raw_from_strings({contract.IMAGE_KEY: image}, raw_spec)),
                           with_text=False)

    def serve_image_text(image, title, tags):
        raw = _raw_from_strings({contract.IMAGE_KEY: image, contract.TITLE_KEY: title,
                                 contract.TAGS_KEY: tags}, raw_spec)
        return predictions(transform(raw), with_text=True)

    def serve_examples(examples):
        return predictions(transform(parse(examples)), with_text=False)

    def transform_features(examples):
        return transform(parse(examples))

    def eval_examples(examples):
        transformed = transform(parse(examples))
        image_only = model(model_inputs(transformed, False), training=False)
        with_text = model(model_inputs(transformed, True), training=False)
        return {contract.IMAGE_ONLY: tf.nn.softmax(head_logits(image_only, False), axis=-1),
                contract.IMAGE_TEXT: tf.nn.softmax(head_logits(with_text, True), axis=-1)}

    def strings(name):
        return tf.TensorSpec([None], tf.string, name=name)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tft_layer)
    examples = [strings(contract.EXAMPLES_INPUT)]
    archive.add_endpoint(contract.IMAGE_SIGNATURE, serve_image,
                         input_signature=[strings(contract.IMAGE_KEY)])
    archive.add_endpoint(contract.IMAGE_TEXT_SIGNATURE, serve_image_text,
                         input_signature=[strings(contract.IMAGE_KEY), strings(contract.TITLE_KEY),
                                          strings(contract.TAGS_KEY)])
    archive.add_endpoint(contract.EXAMPLES_SIGNATURE, serve_examples, input_signature=examples)
    archive.add_endpoint(contract.TRANSFORM_SIGNATURE, transform_features,
                         input_signature=examples)
    archive.add_endpoint(contract.EVAL_SIGNATURE, eval_examples, input_signature=examples)
    if search_items is not None and len(search_items):
        _add_search_endpoints(archive, search_items, min(int(search_top_k), len(search_items)),
                              model, model_inputs, transform, raw_spec, strings)
    archive.write_out(export_dir, verbose=False)
    # The Transform's class counts beside the model, for evaluation's per-class report (TF
    # Serving ignores assets.extra/ files it does not know).
    counts_path = os.path.join(export_dir, LABEL_COUNTS_FILE)
    tf.io.gfile.makedirs(os.path.dirname(counts_path))
    tf.io.gfile.copy(tf_transform_output.vocabulary_file_by_name(contract.LABEL_COUNTS_VOCAB_NAME),
                     counts_path, overwrite=True)
    with tf.io.gfile.GFile(os.path.join(export_dir, CLASS_NAMES_FILE), "w") as f:
        f.write(json.dumps(class_names, ensure_ascii=False))
    return export_dir


def _add_search_endpoints(archive, items, k, model, model_inputs, transform, raw_spec, strings):
    """search_image / search_image_text: exact top-k over the items, inside the graph."""
    import tensorflow as tf

    table = _search_table(items)
    archive.track(table)

    def query_vectors(outputs, with_text):
        # the query vector follows the items' rule (`sicot.data.search_index.item_vectors`)
        image = tf.math.l2_normalize(tf.cast(outputs[contract.EMBEDDING], tf.float32), axis=-1)
        if not with_text:
            return image
        semantic = tf.math.l2_normalize(tf.cast(outputs[contract.SEMANTIC], tf.float32), axis=-1)
        return tf.concat([image, semantic], axis=-1) / tf.sqrt(2.0)

    def search(transformed, with_text):
        outputs = model(model_inputs(transformed, with_text), training=False)
        with_text = with_text and contract.SEMANTIC in outputs and table.image_text is not None
        matrix = table.image_text if with_text else table.image
        scores, ids = tf.math.top_k(
            tf.matmul(query_vectors(outputs, with_text), matrix, transpose_b=True), k=k)
        return {contract.ITEM_IDS_OUTPUT: tf.gather(table.item_ids, ids),
                contract.ITEM_LABELS_OUTPUT: tf.gather(table.labels, ids),
                contract.ITEM_SCORES_OUTPUT: scores}

    def search_image(image):
        return search(transform(_raw_from_strings({contract.IMAGE_KEY: image}, raw_spec)), False)

    def search_image_text(image, title, tags):
        raw = _raw_from_strings({contract.IMAGE_KEY: image, contract.TITLE_KEY: title,
                                 contract.TAGS_KEY: tags}, raw_spec)
        return search(transform(raw), True)

    archive.add_endpoint(contract.SEARCH_IMAGE_SIGNATURE, search_image,
                         input_signature=[strings(contract.IMAGE_KEY)])
    archive.add_endpoint(contract.SEARCH_IMAGE_TEXT_SIGNATURE, search_image_text,
                         input_signature=[strings(contract.IMAGE_KEY), strings(contract.TITLE_KEY),
                                          strings(contract.TAGS_KEY)])


def _search_table_class():
    import tensorflow as tf

    class SearchTable(tf.Module):
        """The search items as variables of the SavedModel (not graph constants: a catalogue
        of millions of items would pass the 2 GB GraphDef limit)."""

        def __init__(self, items):
            super().__init__(name="search_table")
            self.item_ids = tf.Variable(items.item_ids.astype(str).astype(bytes),
                                        trainable=False, name="item_ids", dtype=tf.string)
            self.labels = tf.Variable(items.labels.astype(str).astype(bytes), trainable=False,
                                      name="labels", dtype=tf.string)
            self.image = tf.Variable(items.image, trainable=False, name="image")
            self.image_text = (tf.Variable(items.image_text, trainable=False, name="image_text")
                               if items.image_text is not None else None)

    return SearchTable


def _search_table(items):
    return _search_table_class()(items)
