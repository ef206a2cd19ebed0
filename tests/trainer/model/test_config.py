import dataclasses

import pytest

from sicot.trainer.model.config import MODEL_TYPES, PRESET_NAMES, ModelConfig


def test_round_trip_through_dict():
    cfg = ModelConfig.preset("cosine").replace(epochs=3, tau=0.5, seed=7)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="learnin_rate"):
        ModelConfig.from_dict({"learnin_rate": 0.1})


def test_from_dict_starts_from_preset():
    cfg = ModelConfig.from_dict({"preset": "crt", "epochs": 2})
    assert cfg.model_type == "crt" and cfg.loss_type == "ce" and cfg.epochs == 2


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_is_valid_and_shares_the_schedule(name):
    cfg = ModelConfig.preset(name)
    base = ModelConfig()
    for field in ("backbone", "embedding_dim", "learning_rate", "epochs",
                  "batch_size", "augment"):
        assert getattr(cfg, field) == getattr(base, field)
    assert cfg.model_type in MODEL_TYPES


def test_presets_differ_where_the_method_differs():
    assert ModelConfig.preset("ce").loss_type == "ce"
    assert ModelConfig.preset("balanced_softmax").loss_type == "balanced_softmax"
    assert ModelConfig.preset("cosine").classifier_type == "cosine"
    assert not ModelConfig.preset("sicot_no_attention").use_attention
    no_co = ModelConfig.preset("sicot_no_cotraining")
    assert no_co.distill_weight == 0 and no_co.align_weight == 0 and no_co.uses_text
    assert not ModelConfig.preset("logit_adjust").uses_text


@pytest.mark.parametrize("changes, word", [
    ({"model_type": "svm"}, "model_type"), ({"backbone": "vgg"}, "backbone"),
    ({"tau": -1.0}, "tau"), ({"batch_size": 0}, "batch_size"),
    ({"distill_temperature": 0.0}, "distill_temperature")])
def test_invalid_values_name_the_field(changes, word):
    with pytest.raises(ValueError, match=word):
        ModelConfig().replace(**changes)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().epochs = 3
