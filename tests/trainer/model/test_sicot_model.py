"""SICoTModel: outputs, multi-head loss, one training step, save/load."""
import keras
import numpy as np
import pytest

from sicot.trainer.model.config import ModelConfig
from sicot.trainer.model.sicot_model import SICoTModel, build_model

COUNTS = [20, 8, 3, 1]
SMALL = dict(embedding_dim=8, token_dim=6, attention_rank=3, batch_size=8)


def _model(preset, **changes):
    cfg = ModelConfig.preset(preset).replace(**SMALL, **changes)
    return build_model(cfg, num_classes=4, vocab_size=12, class_counts=COUNTS, max_tokens=5,
                       image_size=16)


def _batch(n=8, seed=0):
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % 4
    images = rng.rand(n, 16, 16, 3).astype("float32") * 40 + labels[:, None, None, None] * 50
    tokens = np.stack([[2 + k, 6, 0, 0, 0] for k in labels]).astype("int32")
    tokens[0] = 0  # one example without text
    return {"image": images, "tokens": tokens}, labels.astype("int32")


def _term_before_and_after_training(model, x, y, term, steps):
    """One loss term of a compiled model on (x, y), before and after `steps` training steps."""
    def value():
        return float(model.loss_terms(y, model(x, training=True))[term])

    before = value()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return before, value()


def test_outputs_of_sicot_and_of_a_visual_only_baseline():
    x, _ = _batch()
    out = _model("sicot")(x)
    assert set(out) == {"visual_logits", "embedding", "semantic", "attention",
                        "semantic_logits", "fused_logits"}
    assert out["fused_logits"].shape == (8, 4) and out["attention"].shape == (8, 5)
    assert set(_model("ce")(x)) == {"visual_logits", "embedding"}
    # Image-only call of the text model: visual outputs only.
    assert set(_model("sicot")({"image": x["image"]})) == {"visual_logits", "embedding"}


def test_loss_is_the_weighted_sum_of_its_terms_and_text_terms_skip_empty_text():
    x, y = _batch()
    model = _model("sicot", align_weight=0.25, distill_weight=2.0)
    out = model(x)
    terms = {k: float(v) for k, v in model.loss_terms(y, out).items()}
    total = float(model.compute_loss(x, y, out))
    expected = (terms["visual"] + terms["semantic"] + terms["fused"] + 2.0 * terms["distill"]
                + 0.25 * terms["align"])
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    # The align term averages over the 7 examples with text only.
    v, s = np.asarray(out["embedding"]), np.asarray(out["semantic"])
    cos = (v * s).sum(-1) / (np.linalg.norm(v, axis=-1) * np.linalg.norm(s, axis=-1) + 1e-12)
    np.testing.assert_allclose(terms["align"], (1 - cos[1:]).mean(), rtol=1e-4)
    assert np.isfinite(list(terms.values())).all()


def test_without_cotraining_the_terms_have_zero_weight():
    x, y = _batch()
    model = _model("sicot_no_cotraining")
    out = model(x)
    terms = model.loss_terms(y, out)
    np.testing.assert_allclose(
        float(model.compute_loss(x, y, out)),
        float(terms["visual"]) + float(terms["semantic"]) + float(terms["fused"]), rtol=1e-5)


@pytest.mark.parametrize("preset", ["sicot", "ce", "cosine", "balanced_softmax"])
def test_training_steps_reduce_the_loss(preset):
    x, y = _batch()
    model = _model(preset, augment=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))

    def loss():  # training-mode forward pass: deterministic (no dropout), batch statistics
        return float(model.compute_loss(x, y, model(x, training=True)))

    before = loss()
    for _ in range(3):
        model.train_on_batch(x, y)
    after = loss()
    assert after < before


def test_save_and_load_keras_file_gives_equal_outputs(tmp_path):
    x, y = _batch()
    model = _model("sicot", classifier_type="cosine")
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0)  # moves BN statistics off their initial values
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, SICoTModel) and loaded.get_config() == model.get_config()
    a, b = model(x), loaded(x)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5, atol=1e-6)


def test_get_config_is_exactly_the_init_arguments():
    import inspect

    model = _model("sicot")
    init_args = set(inspect.signature(SICoTModel.__init__).parameters) - {"self", "kwargs"}
    assert set(model.get_config()) - {"name", "trainable"} == init_args
    assert ModelConfig.from_dict(model.get_config()["config"]) == model.model_config


def test_class_counts_must_match_num_classes():
    with pytest.raises(ValueError, match="class_counts"):
        SICoTModel(3, 10, [1, 2], ModelConfig().to_dict())


def test_reset_classifier_changes_only_the_visual_head():
    model = _model("crt")
    tower = [w.copy() for w in model.visual_tower.get_weights()]
    kernel = np.asarray(model.visual_head.kernel).copy()
    model.reset_classifier(seed=3)
    assert not np.allclose(kernel, np.asarray(model.visual_head.kernel))
    for a, b in zip(tower, model.visual_tower.get_weights()):
        np.testing.assert_array_equal(a, b)


def _text_centre_model(**changes):
    from sicot.trainer.class_words import class_word_table

    x, y = _batch()
    model = _model("sicot", text_centres=True, class_words=3, **changes)
    ids, weights = class_word_table(x["tokens"], y, num_classes=4, top_k=3)
    model.set_class_words(ids, weights)
    return model, x, y


def test_text_centres_add_a_word_composed_part_to_the_visual_centres():
    model, x, _ = _text_centre_model()
    centres = np.asarray(model.text_centres())
    assert centres.shape == (4, 8) and np.isfinite(centres).all()
    # Class 0's text is words 2 and 6; class 1's words 3 and 6: their centres differ.
    assert not np.allclose(centres[0], centres[1])
    v = np.asarray(model(x)["embedding"])
    head = model.visual_head
    expected = v @ (np.asarray(head.kernel) + centres.T) + np.asarray(head.bias)
    np.testing.assert_allclose(np.asarray(model(x)["visual_logits"]), expected, rtol=1e-4,
                               atol=1e-5)
    # Image-only calls use them too (the table is part of the model).
    np.testing.assert_allclose(np.asarray(model({"image": x["image"]})["visual_logits"]),
                               expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        model.set_class_words(np.zeros((4, 2)), np.zeros((4, 2)))


@pytest.mark.parametrize("target", ["bag", "attention"])
def test_word_prediction_term_trains_and_is_finite_with_empty_text(target):
    model, x, y = _text_centre_model(word_prediction_weight=0.5, word_prediction_target=target,
                                     augment=False)
    out = model(x, training=True)
    assert out["word_logits"].shape == (8, 12)
    weights = np.asarray(out["word_target"])
    np.testing.assert_allclose(weights[1:].sum(-1), 1.0, rtol=1e-5)
    assert weights[0].sum() == 0  # the example without text adds nothing
    terms = model.loss_terms(y, out)
    assert np.isfinite(float(terms["words"])) and float(terms["words"]) > 0
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before, after = _term_before_and_after_training(model, x, y, "words", steps=5)
    assert after < before
    # The word predictor is a training head: no word outputs at inference.
    assert "word_logits" not in model(x)


def test_text_centre_model_save_load_keeps_the_table(tmp_path):
    model, x, y = _text_centre_model(word_prediction_weight=0.5)
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded.class_word_ids),
                                  np.asarray(model.class_word_ids))
    np.testing.assert_allclose(np.asarray(loaded(x)["visual_logits"]),
                               np.asarray(model(x)["visual_logits"]), rtol=1e-5, atol=1e-6)


def test_text_options_need_the_text_branch():
    with pytest.raises(ValueError, match="need the text branch"):
        ModelConfig.preset("cosine").replace(text_centres=True)


def test_text_centres_from_the_word_detectors_only():
    model, x, y = _text_centre_model(word_prediction_weight=1.0,
                                     text_centre_source="word_predictor", free_centres=False,
                                     augment=False)
    detectors = np.asarray(model.word_predictor.kernel).T  # [V, D]
    ids, weights = np.asarray(model.class_word_ids), np.asarray(model.class_word_weights)
    expected = float(np.asarray(model.text_centre_scale)) * np.einsum(
        "ck,ckd->cd", weights, detectors[ids])
    np.testing.assert_allclose(np.asarray(model.text_centres()), expected, rtol=1e-5, atol=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.train_on_batch(x, y)
    # No free part: the visual head's own kernel stays zero and out of training.
    assert not np.asarray(model.visual_head.kernel).any()
    assert not any(v is model.visual_head.kernel for v in model.trainable_variables)
    with pytest.raises(ValueError, match="needs word_prediction_weight"):
        ModelConfig.preset("sicot").replace(text_centres=True,
                                            text_centre_source="word_predictor")


def test_without_text_grad_to_tower_the_text_losses_do_not_move_the_tower():
    import tensorflow as tf

    x, y = _batch()
    for flag, expect_grad in ((True, True), (False, False)):
        model = _model("sicot", text_grad_to_tower=flag, distill_weight=0.0, align_weight=0.0,
                       visual_weight=0.0)
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x, y, model(x, training=True))
        grads = tape.gradient(loss, model.visual_tower.trainable_variables)
        moved = any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
        assert moved == expect_grad


def test_classifier_retraining_trains_only_the_visual_head_with_ce_and_distillation():
    x, y = _batch()
    model = _model("sicot", classifier_retraining=True, crt_distill_weight=0.5, augment=False)
    assert model.model_config.retrains_classifier
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0)
    frozen = {id(v): np.asarray(v).copy() for v in model.weights
              if not any(v is w for w in model.visual_head.weights)}
    head_before = np.asarray(model.visual_head.kernel).copy()
    model.start_classifier_retraining(seed=1)
    assert {id(v) for v in model.trainable_variables} == {
        id(v) for v in model.visual_head.trainable_variables}
    assert not np.allclose(np.asarray(model.visual_head.kernel), head_before)  # re-initialised
    out = model(x, training=True)
    terms = model.loss_terms(y, out)
    # Stage 2 loss: plain CE on the visual head (sampling is balanced) + 0.5 x distillation.
    logits = np.asarray(out["visual_logits"], dtype="float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -log_probs[np.arange(len(y)), y].mean()
    np.testing.assert_allclose(float(terms["visual"]), ce, rtol=1e-4)
    np.testing.assert_allclose(float(model.compute_loss(x, y, out)),
                               float(terms["visual"]) + 0.5 * float(terms["distill"]), rtol=1e-5)
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=1, verbose=0)
    for v in model.weights:
        if id(v) in frozen:
            np.testing.assert_array_equal(np.asarray(v), frozen[id(v)])
    model.end_classifier_retraining()
    assert len(model.trainable_variables) > len(model.visual_head.trainable_variables)


@pytest.mark.parametrize("space", ["adjusted", "raw"])
def test_distillation_space(space):
    from sicot.trainer.model import losses as long_tail_losses

    x, y = _batch()
    model = _model("sicot", distill_space=space)
    out = model(x)
    prior = long_tail_losses.log_class_prior(COUNTS) if space == "adjusted" else 0.0
    student = np.asarray(out["visual_logits"]) + prior
    teacher = np.asarray(out["fused_logits"]) + prior
    expected = np.asarray(long_tail_losses.distillation_loss(student, teacher, 2.0))[1:].mean()
    np.testing.assert_allclose(float(model.loss_terms(y, out)["distill"]), expected, rtol=1e-4)


def test_classifier_retraining_freezes_the_text_centre_parts_too():
    model, _, _ = _text_centre_model(word_prediction_weight=1.0,
                                     text_centre_source="word_predictor",
                                     classifier_retraining=True)
    model.start_classifier_retraining(seed=1)
    assert {id(v) for v in model.trainable_variables} == {
        id(v) for v in model.visual_head.trainable_variables}
    model.end_classifier_retraining()
    assert any(v is model.text_centre_scale for v in model.trainable_variables)


def test_contrastive_term_is_weighted_finite_with_empty_text_and_trains():
    x, y = _batch()
    model = _model("sicot", contrastive_weight=0.5, augment=False)
    out = model(x, training=True)
    terms = {k: float(v) for k, v in model.loss_terms(y, out).items()}
    assert np.isfinite(terms["contrast"]) and terms["contrast"] > 0
    weights = dict(visual=1, semantic=1, fused=1, distill=1, align=0.5, contrast=0.5)
    np.testing.assert_allclose(float(model.compute_loss(x, y, out)),
                               sum(w * terms[k] for k, w in weights.items()), rtol=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before, after = _term_before_and_after_training(model, x, y, "contrast", steps=5)
    assert after < before
    with pytest.raises(ValueError, match="contrastive_weight"):
        ModelConfig.preset("crt").replace(contrastive_weight=1.0)


@pytest.mark.parametrize("kind", ["contrastive", "cosine"])
def test_listing_term_trains_the_text_side_only_and_reads_s0_as_enrolment_does(kind, tmp_path):
    x, y = _batch()
    model = _model("sicot", listing_weight=0.5, listing_loss=kind, augment=False,
                   classifier_retraining=True)
    out = model(x, training=True)
    # R s0 with s0 the word attention under an empty query (every word weighs the same), as
    # enrolment computes it (enrolled_model.embed_listings), not s (queried by the photo).
    s0, weights = model.word_attention(np.zeros((8, 8), "float32"), x["tokens"])
    np.testing.assert_allclose(np.asarray(weights[1]), [0.5, 0.5, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["listing_visual"]),
                               np.asarray(model.listing_to_visual(s0)), rtol=1e-5, atol=1e-6)
    terms = {k: float(v) for k, v in model.loss_terms(y, out).items()}
    assert np.isfinite(terms["listing"]) and terms["listing"] > 0
    weights = dict(visual=1, semantic=1, fused=1, distill=1, align=0.5, listing=0.5)
    np.testing.assert_allclose(float(model.compute_loss(x, y, out)),
                               sum(w * terms[k] for k, w in weights.items()), rtol=1e-5)
    # The visual side is held fixed: the term's gradient reaches R and the word embeddings,
    # not the tower.
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = model.loss_terms(y, model(x, training=True))["listing"]
    grads = tape.gradient(loss, model.trainable_variables)
    moved = {v.path.split("/")[1] for v, g in zip(model.trainable_variables, grads)
             if g is not None and float(tf.reduce_sum(tf.abs(g))) > 0}
    assert "listing_projection" in moved and "word_attention" in moved
    assert "visual_tower" not in moved
    # With the other terms off the photos stay put, and the listings learn to land on them.
    alone = _model("sicot", listing_weight=1.0, listing_loss=kind, augment=False,
                   visual_weight=0.0, semantic_weight=0.0, fused_weight=0.0,
                   distill_weight=0.0, align_weight=0.0)
    alone.compile(optimizer=keras.optimizers.Adam(1e-3))
    before, after = _term_before_and_after_training(alone, x, y, "listing", steps=10)
    assert after < before
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.has_listing_projection and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(np.asarray(loaded.listing_to_visual(s0)),
                               np.asarray(model.listing_to_visual(s0)), rtol=1e-5, atol=1e-6)
    model.start_classifier_retraining(seed=1)  # cRT stage 2 freezes the projection too
    assert not any(v is model.listing_projection.kernel for v in model.trainable_variables)
    assert not _model("sicot").has_listing_projection
    with pytest.raises(ValueError, match="listing_weight"):
        ModelConfig.preset("cosine").replace(listing_weight=1.0)
    with pytest.raises(ValueError, match="listing_loss"):
        ModelConfig().replace(listing_loss="dot")
