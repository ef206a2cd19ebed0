"""Registers the tensorflow-text ops in whatever process imports this module.

The Transform graph uses tensorflow-text ops (CaseFoldUTF8, WhitespaceTokenizer...).
tf.Transform 1.16 imports tensorflow_text only *after* loading a saved transform graph
(tensorflow_transform/saved/saved_transform_io_v2.py, `_maybe_register_addon_ops`), so a fresh
Beam worker process (DirectRunner multi_processing, Dataflow, Flink, Spark) fails with
"KeyError: 'CaseFoldUTF8'". Beam unpickles every DoFn of a fused stage before it runs any, and
unpickling `with_text_ops` imports this module, which registers the ops first.
"""
import tensorflow_text  # noqa: F401  (imported for its op registrations)


def with_text_ops(batch):
    """Identity; put `beam.Map(with_text_ops)` ahead of a stage that loads the transform graph."""
    return batch
