"""SICoTModel above the class-count threshold: Partial FC heads in training, exact softmax at
inference, one class sample shared by all heads, SparseCentreAdamW from run_fn's optimizer."""
import keras
import numpy as np
import pytest

from sicot.trainer.model.classifier_head import ClassifierHead
from sicot.trainer.model.config import ModelConfig
from sicot.trainer.model.sampled_classifier_head import SampledClassifierHead
from sicot.trainer.model.sicot_model import build_model
from sicot.trainer.sparse_centre_adamw import SparseCentreAdamW
from sicot.trainer.task import make_optimizer

NUM_CLASSES = 300
COUNTS = np.maximum(1, np.round(50 * 50.0 ** (-np.arange(NUM_CLASSES) / NUM_CLASSES)))
SMALL = dict(embedding_dim=8, token_dim=6, attention_rank=3, batch_size=8,
             augment=False, sampled_classifier_min_classes=100, negative_share=0.1)


def _model(preset="sicot", **changes):
    cfg = ModelConfig.preset(preset).replace(**{**SMALL, **changes})
    return build_model(cfg, num_classes=NUM_CLASSES, vocab_size=12, class_counts=COUNTS,
                       max_tokens=5, image_size=16)


def _batch(n=8, seed=0):
    rng = np.random.RandomState(seed)
    labels = (np.arange(n) * 37) % NUM_CLASSES
    images = rng.rand(n, 16, 16, 3).astype("float32") * 255
    tokens = np.stack([[2 + k % 9, 6, 0, 0, 0] for k in labels]).astype("int32")
    tokens[0] = 0
    return {"image": images, "tokens": tokens}, labels.astype("int32")


@pytest.mark.parametrize("changes, message", [
    (dict(negative_share=0.0), "negative_share=0.0"),
    (dict(sampled_classifier_min_classes=0), "sampled_classifier_min_classes=0"),
    (dict(centre_momentum=1.0), "centre_momentum=1.0"),
    (dict(centre_learning_rate=0.0), "centre_learning_rate=0.0"),
])
def test_bad_sampling_settings_name_the_value(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig().replace(**changes)


def test_threshold_picks_the_head_and_the_optimizer():
    assert isinstance(_model().visual_head, SampledClassifierHead)
    dense = _model(sampled_classifier_min_classes=NUM_CLASSES + 1)
    assert isinstance(dense.visual_head, ClassifierHead) and not dense.sampled
    model = _model()
    assert model.sampled
    assert all(isinstance(h, SampledClassifierHead)
               for h in (model.visual_head, model.semantic_head, model.fused_head))
    assert isinstance(make_optimizer(model.model_config, 10, sampled=True), SparseCentreAdamW)


def test_training_call_has_no_full_logits_and_inference_is_exact():
    x, y = _batch()
    model = _model()
    train_out = model(x, training=True)
    assert "visual_logits" not in train_out and "fused_logits" not in train_out
    out = model(x)
    assert out["visual_logits"].shape == (8, NUM_CLASSES)
    assert out["fused_logits"].shape == (8, NUM_CLASSES)
    # The loss adds the logits over one shared sample: [B, K] for every head.
    terms = model.loss_terms(y, train_out)
    assert set(terms) == {"visual", "semantic", "fused", "distill", "align"}
    k = train_out["visual_logits"].shape[1]
    assert k == model.visual_head.num_draws + 8 < NUM_CLASSES
    assert train_out["fused_logits"].shape == (8, k) == train_out["semantic_logits"].shape
    assert all(np.isfinite(float(v)) for v in terms.values())


@pytest.mark.parametrize("preset", ["sicot", "logit_adjust"])
def test_fit_with_sparse_centre_optimizer_reduces_the_exact_loss(preset):
    x, y = _batch()
    model = _model(preset, centre_learning_rate=0.5)
    model.compile(optimizer=make_optimizer(model.model_config, 20, learning_rate=1e-2,
                                       sampled=True))

    def exact_loss():  # full-softmax loss of the visual head at inference
        from sicot.trainer.model import losses as long_tail_losses

        logits = model({"image": x["image"]})["visual_logits"]
        return float(np.mean(long_tail_losses.long_tail_cross_entropy(
            y, logits, model._log_prior, "ce")))

    before = exact_loss()
    centres = model.visual_head.centres.numpy().copy()
    history = model.fit(x, y, batch_size=8, epochs=15, verbose=0)
    assert exact_loss() < before
    assert "visual_accuracy" in history.history
    moved = np.any(model.visual_head.centres.numpy() != centres, axis=1)
    assert moved[y].all()  # every positive class moved
    heads = [l for l in model._flatten_layers() if isinstance(l, SampledClassifierHead)]
    tables = sum(len(h.centre_variables()) for h in heads)
    class_sized = [v for v in model.optimizer.variables
                   if len(v.shape) and v.shape[0] == NUM_CLASSES]
    assert len(class_sized) == tables  # one momentum table each, never Adam's two


def test_crt_reset_reinitialises_the_sampled_visual_head_only():
    model = _model("crt")
    before = model.visual_head.centres.numpy().copy()
    model.visual_head.bias.assign(np.ones(NUM_CLASSES, "float32"))
    model.reset_classifier(seed=1)
    assert not np.allclose(model.visual_head.centres.numpy(), before)
    assert np.all(model.visual_head.bias.numpy() == 0)


def test_save_and_load_keras_file_keeps_the_sampled_heads(tmp_path):
    x, _ = _batch()
    model = _model()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert isinstance(loaded.visual_head, SampledClassifierHead)
    np.testing.assert_allclose(loaded(x)["visual_logits"], model(x)["visual_logits"],
                               rtol=1e-5, atol=1e-5)
