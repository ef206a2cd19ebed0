"""Measuring an exported model: `band_accuracy` (`sicot evaluate`: top-1 / top-5, overall and
by many / medium / few band), `error_analysis` (the HTML page with images, confusions and
accuracy by training count) and `batch_scoring` (`sicot score` and the pipeline's batch
scoring, a Beam job).

Imports `export` of `sicot.trainer` only.
"""
