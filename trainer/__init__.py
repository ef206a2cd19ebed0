"""The trainer: everything that turns transformed examples into a served model, in rooms.

Here, where a reader looks first, are the training entry points: `task.run_fn` (the TFX
Trainer's, named `sicot.trainer.task.run_fn` by the pipeline), `cli` (`sicot train`,
`evaluate`, `score`), `options` (user options -> configs), `input` (tf.data), `distribution`
(tf.distribute strategy), `cached_features` (training over a frozen backbone's features),
`class_words`, `sparse_centre_adamw` (the optimizer of sampled heads) and `warm_start`.
The sub-packages, lowest first; each imports only from the rows above it (and from
`sicot.contract`, `sicot.errors`, `sicot.paths`, `sicot.console`, `sicot.data`), never sideways
within a row, and `tests/test_import_layers.py` checks it:

    transform/    tf.Transform `preprocessing_fn` and its image and text ops
    backbones/    EfficientNet-Lite0 and its ImageNet weights, pretrained weight files
    model/        Keras 3 layers, losses and models, and their `ModelConfig`
    export/       the serving SavedModel and the folders a run writes
    enrollment/   new classes without training (`sicot enroll`, `sicot index`)
    evaluation/   accuracy by band (`sicot evaluate`), error analysis, Beam batch scoring

`preprocessing.py` only keeps the Transform's dotted name of pipelines compiled before the
sub-packages (`sicot.trainer.preprocessing.preprocessing_fn`).
"""
