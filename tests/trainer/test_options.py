"""One mapping from user options to TransformConfig and ModelConfig for every front end."""
import argparse
import re

import pytest

from sicot.errors import UserError
from sicot.pipeline import cli as pipeline_cli
from sicot.pipeline import local_runner
from sicot.trainer import options
from sicot.trainer.model.config import ModelConfig
from sicot.trainer.transform.preprocessing import TransformConfig

ARGV = ["--model", "crt", "--epochs", "3", "--seed", "7", "--batch-size", "16",
        "--image-size", "32", "--band-edges", "4,10", "--set", "tau=0.5",
        "--backbone-weights", "gs://b/tower.weights.h5", "--backbone-frozen-epochs", "1"]
ENV = {"SICOT_MODEL": "crt", "SICOT_EPOCHS": "3", "SICOT_SEED": "7", "SICOT_BATCH_SIZE": "16",
       "SICOT_IMAGE_SIZE": "32", "SICOT_BAND_EDGES": "4,10",
       "SICOT_BACKBONE_WEIGHTS": "gs://b/tower.weights.h5", "SICOT_BACKBONE_FROZEN_EPOCHS": "1"}
EXPECTED_TRANSFORM = TransformConfig(image_size=32, band_edges=(4, 10))
EXPECTED_MODEL = ModelConfig.preset("crt").replace(
    epochs=3, seed=7, batch_size=16, backbone_weights="gs://b/tower.weights.h5",
    backbone_frozen_epochs=1)


def _parse(argv):
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    return parser.parse_args(argv)


def test_train_run_and_the_tfx_runner_build_the_same_configs(tmp_path):
    # sicot train
    transform, model = options.configs_from_args(_parse(ARGV))
    assert transform == EXPECTED_TRANSFORM and model == EXPECTED_MODEL.replace(tau=0.5)
    # sicot run / compile: what create_pipeline gets
    parser = argparse.ArgumentParser()
    pipeline_cli._add_model_args(parser)
    parser.add_argument("--pipeline-name", default="sicot")
    settings = pipeline_cli._settings(parser.parse_args(ARGV))
    assert TransformConfig.from_dict(settings["transform_config"]) == EXPECTED_TRANSFORM
    assert ModelConfig.from_dict(settings["model_config"]) == EXPECTED_MODEL.replace(tau=0.5)
    # the tfx CLI runner (environment variables)
    settings = local_runner.settings_from_env(dict(ENV, SICOT_DATA=str(tmp_path)))
    assert TransformConfig.from_dict(settings["transform_config"]) == EXPECTED_TRANSFORM
    assert ModelConfig.from_dict(settings["model_config"]) == EXPECTED_MODEL


def test_defaults_are_the_configs_defaults():
    transform, model = options.configs_from_options()
    assert transform == TransformConfig() and model == ModelConfig.preset("sicot")


def test_the_image_size_has_one_owner():
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig.from_dict({"image_size": 64})
    with pytest.raises(UserError, match="--set 'image_size=32'"):
        options.configs_from_options(set_options=["image_size=32"])


@pytest.mark.parametrize("overrides, message", [
    (dict(model="resnet"), "unknown model preset 'resnet'"),
    (dict(epochs=0), "--epochs must be >= 1"),
    (dict(batch_size=0), "--batch-size must be >= 1"),
    (dict(image_size=4), "--image-size/--band-edges: image_size must be >= 8"),
    (dict(band_edges="10"), "--band-edges '10': expected two integers"),
    (dict(band_edges="10,5"), "need 0 < LOW <= HIGH"),
    (dict(backbone="vgg"), "backbone='vgg'"),
    (dict(set_options=["tau=x"]), "'x' is not a float"),
    (dict(backbone_frozen_epochs=1), "backbone_frozen_epochs needs backbone_weights"),
    (dict(backbone_weights="w.h5", backbone_frozen_epochs=99),
     "backbone_frozen_epochs=99: must be in [0, epochs="),
    (dict(backbone_weights="imagenet"), "backbone_weights='imagenet' is packaged for"),
    (dict(backbone="efficientnet_lite0", backbone_weights="none", backbone_frozen_epochs=1),
     "backbone_frozen_epochs needs backbone_weights"),
    (dict(set_options=["fine_tune_lr_scale=0"]), "fine_tune_lr_scale=0.0: must be > 0"),
    (dict(set_options=["pretrained_bn=thaw"]), "pretrained_bn='thaw'"),
])
def test_bad_options_are_user_errors_naming_the_option(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        options.configs_from_options(**overrides)


def test_efficientnet_lite0_starts_from_imagenet_at_its_size_with_the_backbone_frozen():
    transform, model = options.configs_from_options("cosine", backbone="efficientnet_lite0",
                                                    epochs=12)
    assert transform.image_size == 96
    assert model.tower_weights == "imagenet" and model.pretrained_tower
    assert model.backbone_frozen_epochs == 12  # fine-tuning is opt-in
    transform, model = options.configs_from_options(
        "cosine", backbone="efficientnet_lite0", epochs=12, backbone_frozen_epochs=10,
        image_size=128)
    assert transform.image_size == 128 and model.backbone_frozen_epochs == 10
    _, model = options.configs_from_options("ce", backbone="efficientnet_lite0",
                                            backbone_weights="none")
    assert model.tower_weights == "" and model.backbone_frozen_epochs == 0
    # the other backbones keep random init and the Transform's default size
    transform, model = options.configs_from_options("ce", backbone="resnet50")
    assert transform.image_size == TransformConfig().image_size and not model.pretrained_tower


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(UserError, match="SICOT_EPOCHS='two'"):
        local_runner.settings_from_env({"SICOT_DATA": str(tmp_path), "SICOT_EPOCHS": "two"})
