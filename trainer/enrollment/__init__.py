"""New classes for a trained model without a gradient step: `prototypes` (the numpy maths:
calibration, prototypes, scores of enrolled classes), `enrolled_model` (the Keras side:
embeddings and the enrolled model), `catalogue` (`sicot enroll` and the pipeline's Enroller:
a catalogue.jsonl in, a new model version out) and `faiss_index` (`sicot index`, approximate
visual search over a catalogue).

Imports `transform`, `model` and `export` of `sicot.trainer`.
"""
