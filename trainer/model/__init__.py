"""The Keras 3 model: `config` (`ModelConfig`, every setting of a run and its presets),
`visual_tower`, `bilinear_word_attention`, the heads (`classifier_head`,
`sampled_classifier_head`, `prototype_head`), `losses` (long-tail losses and co-training
terms), `sicot_model` (`SICoTModel`, which also trains every baseline) and
`enrolled_sicot_model` (a trained model plus enrolled classes). Layers use `keras.ops` only and
register as `sicot>ClassName`, so saved models load whatever module holds the class.

Imports `sicot.trainer.backbones` only.
"""
