"""User options -> `TransformConfig` and `ModelConfig`: the one mapping every front end uses.

`sicot train`, `sicot run` and `sicot compile` declare the options with `add_arguments` and
map them with `configs_from_args`; the tfx CLI runner (`pipeline/local_runner.py`) reads the
same options from SICOT_* environment variables (`configs_from_env`). All three end in
`configs_from_options`, so an option means the same thing everywhere. Each setting has one
owner: the image size and the band edges belong to the Transform (the model reads its input
size from the Transform output), every other setting to the model.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Mapping, Sequence

from sicot.errors import UserError
from sicot.trainer.model.config import BACKBONES, IMAGENET, PACKAGED_IMAGENET_BACKBONES, PRESET_NAMES, ModelConfig
from sicot.trainer.transform.preprocessing import TransformConfig

# Environment variables of the tfx CLI runner, by option.
ENV_VARS = {"model": "SICOT_MODEL", "epochs": "SICOT_EPOCHS", "backbone": "SICOT_BACKBONE",
            "seed": "SICOT_SEED", "batch_size": "SICOT_BATCH_SIZE",
            "image_size": "SICOT_IMAGE_SIZE", "band_edges": "SICOT_BAND_EDGES",
            "backbone_weights": "SICOT_BACKBONE_WEIGHTS",
            "backbone_frozen_epochs": "SICOT_BACKBONE_FROZEN_EPOCHS"}


def add_arguments(parser: argparse.ArgumentParser, *, model_required: bool = False) -> None:
    """The model and Transform options, as `sicot train`, `run` and `compile` take them."""
    d = TransformConfig()
    low, high = d.band_edges
    parser.add_argument("--model", required=model_required,
                        default=None if model_required else "sicot",
                        help=f"model preset: {', '.join(PRESET_NAMES)}"
                             + ("" if model_required else " (default sicot)"))
    parser.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    parser.add_argument("--backbone", help=f"visual backbone: {' | '.join(BACKBONES)} "
                                           f"(efficientnet_lite0 starts from ImageNet weights)")
    parser.add_argument("--backbone-weights", metavar="PATH",
                        help="what the visual tower starts from: 'imagenet' (the packaged "
                             "weights, efficientnet_lite0's default), 'none' (random init), or "
                             "a Keras weights file, any tf.io.gfile path (gs:// on Vertex): a "
                             "keras.applications ResNet-50 file, or the "
                             "visual_tower.weights.h5 of a trained model")
    parser.add_argument("--backbone-frozen-epochs", type=int, metavar="N",
                        help="the first N epochs train with the pretrained backbone frozen, "
                             "over features computed once; the rest fine-tune it (default: "
                             "all epochs for a tower that starts from packaged ImageNet "
                             "weights, else 0)")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    parser.add_argument("--image-size", type=int,
                        help=f"side of the square model input, pixels; a Transform setting "
                             f"(default {d.image_size}; "
                             + ", ".join(f"{size} for {name}" for name, size
                                         in PACKAGED_IMAGENET_BACKBONES.items()) + ")")
    parser.add_argument("--band-edges", metavar="LOW,HIGH",
                        help=f"class bands by training images: few < LOW <= medium <= HIGH < "
                             f"many; a Transform setting (default {low},{high})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other ModelConfig field, e.g. --set tau=0.5 (repeatable)")


def parse_band_edges(text: str, name: str = "--band-edges") -> tuple[int, int]:
    """'LOW,HIGH' -> (low, high); UserError naming `name` otherwise."""
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{name} {text!r}: expected two integers LOW,HIGH") from None
    if not 0 < low <= high:
        raise UserError(f"{name} {text!r}: need 0 < LOW <= HIGH")
    return low, high


def parse_set_options(pairs: Sequence[str]) -> dict:
    """['tau=0.5', 'use_attention=false'] -> typed ModelConfig changes."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    defaults = ModelConfig()
    changes = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in fields:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE with KEY one of "
                            f"{sorted(fields)}")
        kind = type(getattr(defaults, key))
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value = raw.lower() in ("true", "1")
            else:
                value = kind(raw)
        except ValueError:
            raise UserError(f"--set {pair!r}: {raw!r} is not a {kind.__name__}") from None
        changes[key] = value
    return changes


def configs_from_options(model: str = "sicot", *, epochs: int | None = None,
                         backbone: str | None = None, seed: int | None = None,
                         batch_size: int | None = None, image_size: int | None = None,
                         band_edges: str | Sequence[int] | None = None,
                         backbone_weights: str | None = None,
                         backbone_frozen_epochs: int | None = None,
                         set_options: Sequence[str] = ()) -> tuple[TransformConfig, ModelConfig]:
    """The Transform and model configs of a run; UserError naming the option that is wrong.

    None leaves a setting at its default (the preset's for the model). `band_edges` is
    'LOW,HIGH' or a pair. A backbone with packaged ImageNet weights (efficientnet_lite0) brings
    two defaults of its own: its image size (96) and every epoch with the backbone frozen.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    transform = {}
    if image_size is None and backbone in PACKAGED_IMAGENET_BACKBONES:
        image_size = PACKAGED_IMAGENET_BACKBONES[backbone]  # the size its features are good at
    if image_size is not None:
        transform["image_size"] = int(image_size)
    if band_edges is not None:
        transform["band_edges"] = (parse_band_edges(band_edges) if isinstance(band_edges, str)
                                   else tuple(int(v) for v in band_edges))
    try:
        transform_config = TransformConfig(**transform)
    except ValueError as e:
        raise UserError(f"--image-size/--band-edges: {e}") from None

    changes = {name: value for name, value in (
        ("epochs", epochs), ("backbone", backbone), ("seed", seed), ("batch_size", batch_size),
        ("backbone_weights", backbone_weights),
        ("backbone_frozen_epochs", backbone_frozen_epochs)) if value is not None}
    changes.update(parse_set_options(set_options))
    try:
        model_config = ModelConfig.preset(model).replace(**changes)
        if backbone_frozen_epochs is None and model_config.tower_weights == IMAGENET:
            # ImageNet features are good as they are; fine-tuning is opt-in (minutes an
            # epoch on CPU, seconds over cached features).
            model_config = model_config.replace(backbone_frozen_epochs=model_config.epochs)
    except ValueError as e:
        raise UserError(f"--model {model}: {e}" if model not in PRESET_NAMES else str(e)) from None
    return transform_config, model_config


def configs_from_args(args: argparse.Namespace) -> tuple[TransformConfig, ModelConfig]:
    """`configs_from_options` over the options `add_arguments` declared."""
    return configs_from_options(args.model, epochs=args.epochs, backbone=args.backbone,
                                seed=args.seed, batch_size=args.batch_size,
                                image_size=args.image_size, band_edges=args.band_edges,
                                backbone_weights=args.backbone_weights,
                                backbone_frozen_epochs=args.backbone_frozen_epochs,
                                set_options=args.set)


def configs_from_env(env: Mapping[str, str]) -> tuple[TransformConfig, ModelConfig]:
    """`configs_from_options` over the SICOT_* variables in `ENV_VARS` (unset or '' = default)."""
    options = {}
    for option, var in ENV_VARS.items():
        value = env.get(var)
        if not value:
            continue
        if option in ("epochs", "seed", "batch_size", "image_size", "backbone_frozen_epochs"):
            try:
                value = int(value)
            except ValueError:
                raise UserError(f"{var}={value!r}: expected an integer") from None
        options[option] = value
    return configs_from_options(**options)
