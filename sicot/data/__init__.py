"""Data in and out of SICoT.

  manifest.py       the dataset format (a folder of train/eval/test .jsonl or .csv manifests)
  importer.py       manifest records -> GZIP TFRecords of tf.Example, bad records quarantined
  synth.py          `sicot synth`: procedural long-tailed product data (render.py draws the
                    images, vocabulary.py holds the attribute space and its words)
  text_baseline.py  a text-only naive Bayes check of a dataset
  cli.py            the `sicot synth` and `sicot import` commands
"""
