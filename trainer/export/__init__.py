"""What a training run writes for others to read: `saved_model` (the trained model and the
tf.Transform graph as one SavedModel with the TF Serving signatures) and `folders` (the run
folder's file names and numbered serving versions).

Imports `sicot.trainer.transform` only.
"""
