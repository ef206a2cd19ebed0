"""tf.Transform: `preprocessing.preprocessing_fn` (raw product records -> the model's inputs,
named `sicot.trainer.transform.preprocessing.preprocessing_fn` by the pipeline) and the ops it
shares with training and serving (`images`, `text_ops`), `run_local` (the same Transform on
Beam outside TFX) and `output` (what training reads from a Transform's output).

Imports nothing else of `sicot.trainer`.
"""
