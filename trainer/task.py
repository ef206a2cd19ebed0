"""TFX Trainer entry point: `run_fn` (named `sicot.trainer.task.run_fn` by the pipeline).

The standalone `sicot train` builds a `tfx.components.FnArgs` and calls this same function,
so both paths share the input, model, training schedule and export code.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time

from sicot import console, contract
from sicot.trainer.export.folders import HISTORY_FILE, KERAS_MODEL_FILE
from sicot.trainer.export.saved_model import export_serving_model
from sicot.trainer.model.config import ModelConfig
from sicot.trainer.transform.output import model_shapes, read_class_counts

logger = logging.getLogger(__name__)

def make_optimizer(config: ModelConfig, total_steps: int, learning_rate=None, sampled=False):
    """AdamW with cosine decay; with sampled heads, SparseCentreAdamW (the class-centre tables
    get a row-sparse SGD update and no Adam slots)."""
    import keras

    lr = config.learning_rate if learning_rate is None else learning_rate
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps),
                                                      alpha=0.01)
    if sampled:
        from sicot.trainer.sparse_centre_adamw import SparseCentreAdamW

        return SparseCentreAdamW(centre_learning_rate=config.centre_learning_rate,
                                 centre_momentum=config.centre_momentum,
                                 learning_rate=schedule, weight_decay=config.weight_decay)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)


def _steps_per_epoch(fn_args, config: ModelConfig, records: int) -> int:
    train_steps = getattr(fn_args, "train_steps", None)
    epochs = max(1, config.epochs)
    if train_steps:
        return max(1, math.ceil(int(train_steps) / epochs))
    return max(1, math.ceil(records / config.batch_size))


def _set_class_words(model, config: ModelConfig, train_files, tf_transform_output):
    """Builds the class word table from the training split and stores it in the model."""
    from sicot.trainer import class_words

    start = time.perf_counter()
    tokens, labels = class_words.read_tokens_and_labels(train_files, tf_transform_output)
    ids, weights = class_words.class_word_table(tokens, labels, model.num_classes,
                                                config.class_words)
    model.set_class_words(ids, weights)
    logger.info("class word table: %d classes x %d words from %d examples in %.1f s",
                model.num_classes, config.class_words, len(labels),
                time.perf_counter() - start)


def _warm_start(model, base_model, class_names, tokens, train_files, tf_transform_output,
                config):
    """Starts `model` from the base model's weights (`sicot.trainer.warm_start`)."""
    from sicot.trainer import warm_start
    from sicot.trainer.input import make_dataset

    start = time.perf_counter()
    old_model, old_classes, old_tokens = warm_start.load_base_model(base_model)
    batches = make_dataset(train_files, tf_transform_output, config.batch_size, training=False,
                           augment=False, seed=config.seed)
    report = warm_start.warm_start(model, old_model, old_classes, old_tokens, class_names,
                                   tokens, batches, base=base_model)
    report["seconds"] = time.perf_counter() - start
    logger.info("warm start from %s: %d classes kept, %d new, %d dropped; %d tokens kept, %d "
                "new; %.1f s", base_model, report["kept_classes"], len(report["new_classes"]),
                len(report["dropped_classes"]), report["kept_tokens"], report["new_tokens"],
                report["seconds"])
    return report


def run_fn(fn_args):
    """Trains the model named by `fn_args.custom_config["model"]` and exports the SavedModel.

    Schedule: `epochs` epochs of `train_steps / epochs` steps (or one pass over the training
    files when train_steps is unset); for `crt`, then `crt_epochs` epochs of classifier-only
    re-training with class-balanced sampling on the frozen visual tower (Kang et al. 2020).
    """
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from sicot.trainer import distribution
    from sicot.trainer.input import count_records, make_dataset, plan_shuffle, warn_if_grouped
    from sicot.trainer.model.sicot_model import build_model

    # MultiWorkerMirroredStrategy must exist before any other TF op runs in the process.
    tf_config = distribution.read_tf_config()
    strategy = distribution.make_strategy(tf_config)
    # Every worker trains and saves; only the chief writes the real output folders.
    model_run_dir = distribution.worker_dir(fn_args.model_run_dir, tf_config)
    serving_model_dir = distribution.worker_dir(fn_args.serving_model_dir, tf_config)

    custom_config = dict(getattr(fn_args, "custom_config", None) or {})
    model_dict = dict(custom_config.get("model") or {})
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    class_names, class_counts = read_class_counts(tf_transform_output)
    tokens = [t.decode("utf-8") if isinstance(t, bytes) else t
              for t in tf_transform_output.vocabulary_by_name(contract.TOKEN_VOCAB_NAME)]
    warm_start_report = None
    image_size, max_tokens, vocab_size = model_shapes(tf_transform_output)
    config = ModelConfig.from_dict(model_dict)  # the image size is the Transform's alone
    logger.info("training %s on %d classes (%d..%d images), vocab %d, %dpx", config.model_type,
                len(class_names), min(class_counts), max(class_counts), vocab_size, image_size)

    # One pass over the training files sizes the shuffle (exact when the split fits
    # config.shuffle_memory_mb, see trainer/input.py) and counts the records.
    shuffle = plan_shuffle(fn_args.train_files, config.shuffle_memory_mb)
    logger.info("training input: %s", shuffle.describe())
    grouped_share = None if shuffle.exact else warn_if_grouped(fn_args.train_files)
    steps_per_epoch = _steps_per_epoch(fn_args, config, shuffle.records)
    eval_steps = getattr(fn_args, "eval_steps", None) or None

    def dataset(files, training, balanced):
        return make_dataset(files, tf_transform_output, config.batch_size, training=training,
                            augment=config.augment, class_counts=class_counts,
                            balanced_sampling=balanced, seed=config.seed,
                            shuffle_buffer=shuffle.buffer if training else None,
                            image_size=image_size, crop_min_area=config.crop_min_area)

    train_ds = dataset(fn_args.train_files, True, config.balanced_sampling)
    eval_ds = dataset(fn_args.eval_files, False, False) if fn_args.eval_files else None
    if eval_ds is not None and not eval_steps:
        # Keras cannot tell how many batches a TFRecord dataset holds: it read the validation
        # data until it ended, then warned "Your input ran out of data" after every epoch.
        # One worker: the dataset declares its size (ceil(records / batch); the eval input
        # neither filters nor drops a remainder), so fit and any later evaluate read exactly
        # that many batches. Multi-worker DATA sharding deals the batches out in turn, so a
        # worker holds at least batches // n of them: give that as validation_steps.
        batches = math.ceil(count_records(fn_args.eval_files) / config.batch_size)
        workers = distribution.num_workers(tf_config)
        if workers <= 1:
            eval_ds = eval_ds.apply(tf.data.experimental.assert_cardinality(batches))
        else:
            eval_steps = max(1, batches // workers)

    frozen_epochs = config.backbone_frozen_epochs
    tuned_lr = config.learning_rate * (config.fine_tune_lr_scale if config.pretrained_tower
                                       else 1.0)
    with strategy.scope():
        model = build_model(config, len(class_names), vocab_size, class_counts, max_tokens,
                            image_size)
        if config.pretrained_tower:
            from sicot.trainer.backbones.pretrained import initialise_tower

            kind = initialise_tower(model.visual_tower, config.tower_weights)
            logger.info("visual tower: %s weights (%s)", kind, config.tower_weights)
        base_model = getattr(fn_args, "base_model", None)
        if base_model:
            warm_start_report = _warm_start(model, base_model, class_names, tokens,
                                            fn_args.train_files, tf_transform_output, config)
        if config.text_centres:
            _set_class_words(model, config, fn_args.train_files, tf_transform_output)
        model.visual_tower.set_backbone_trainable(frozen_epochs == 0)
        model.compile(optimizer=make_optimizer(
            config, steps_per_epoch * (frozen_epochs or config.epochs),
            learning_rate=config.learning_rate if frozen_epochs else tuned_lr,
            sampled=model.sampled))
    distribution.prepare_model_for_multi_worker(model, strategy)
    tf.io.gfile.makedirs(model_run_dir)  # local or remote (gs://) alike
    history = {}

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            history.setdefault("epoch_seconds", []).append(time.perf_counter() - self.start)

    class EpochProgress(keras.callbacks.Callback):
        """One bar per epoch on the terminal: its steps, then its loss and validation."""

        def __init__(self, stage):
            super().__init__()
            self.stage, self.bar = stage, None

        def on_epoch_begin(self, epoch, logs=None):
            self.bar = console.progress(total=steps_per_epoch, unit="step",
                                        desc=f"{self.stage} epoch {epoch + 1}/"
                                             f"{self.params['epochs']}")

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)

        def on_epoch_end(self, epoch, logs=None):
            shown = ("loss", "visual_accuracy", "val_loss", "val_visual_accuracy")
            self.bar.set_postfix({k: f"{float(v):.3f}" for k, v in (logs or {}).items()
                                  if k in shown})
            self.bar.close()

    def fit(epochs, log_dir, ds, stage, initial_epoch=0, validation=eval_ds):
        if epochs <= initial_epoch:
            return
        result = model.fit(ds, epochs=epochs, initial_epoch=initial_epoch,
                           steps_per_epoch=steps_per_epoch,
                           validation_data=validation, validation_steps=eval_steps,
                           callbacks=[keras.callbacks.TensorBoard(log_dir=log_dir),
                                      EpochTimer(), EpochProgress(stage)], verbose=0)
        for key, values in result.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)

    cache = {}  # split -> CachedSplit of the backbone as it is now

    def cached(balanced):
        """(train, validation) datasets over the frozen backbone's features."""
        from sicot.trainer import cached_features

        if not cache:
            for split, files in (("train", fn_args.train_files), ("eval", fn_args.eval_files)):
                if files:
                    cache[split] = cached_features.extract(
                        model.visual_tower, files, tf_transform_output,
                        batch_size=config.batch_size, image_size=image_size,
                        cache_dir=custom_config.get("feature_cache_dir"))
            history["feature_cache_seconds"] = (history.get("feature_cache_seconds", 0.0)
                                                + sum(c.seconds for c in cache.values()))
        train = cached_features.feature_dataset(
            cache["train"], config.batch_size, training=True, seed=config.seed,
            balanced_sampling=balanced, class_counts=class_counts)
        validation = (cached_features.feature_dataset(cache["eval"], config.batch_size,
                                                      training=False)
                      if "eval" in cache else None)
        return train, validation

    if frozen_epochs:
        # Pretrained backbone frozen first (the projection, heads and text branch learn on
        # its features without pulling it around), then everything fine-tunes with a fresh
        # schedule at the fine-tuning learning rate.
        if config.cache_features:
            train_features, eval_features = cached(config.balanced_sampling)
            fit(frozen_epochs, model_run_dir, train_features, "train (cached features)",
                validation=eval_features)
        else:
            fit(frozen_epochs, model_run_dir, train_ds, "train (backbone frozen)")
        if config.epochs > frozen_epochs:
            cache.clear()  # the backbone changes
            with strategy.scope():
                model.visual_tower.set_backbone_trainable(True)
                model.compile(optimizer=make_optimizer(
                    config, steps_per_epoch * (config.epochs - frozen_epochs),
                    learning_rate=tuned_lr, sampled=model.sampled))
            distribution.prepare_model_for_multi_worker(model, strategy)
    fit(config.epochs, model_run_dir, train_ds, "train", initial_epoch=frozen_epochs)
    if config.retrains_classifier:
        # cRT stage 2: frozen tower (BN in inference mode), fresh classifier, balanced sampling.
        with strategy.scope():
            model.start_classifier_retraining(seed=config.seed + 1)
            model.compile(optimizer=make_optimizer(config, steps_per_epoch * config.crt_epochs,
                                               sampled=model.sampled))
        distribution.prepare_model_for_multi_worker(model, strategy)
        log_dir = os.path.join(model_run_dir, "crt_stage2")
        if config.cache_features and config.pretrained_tower:
            train_features, eval_features = cached(True)
            fit(config.crt_epochs, log_dir, train_features, "cRT stage 2 (cached features)",
                validation=eval_features)
        else:
            fit(config.crt_epochs, log_dir, dataset(fn_args.train_files, True, True),
                "cRT stage 2")
        model.end_classifier_retraining()

    model.save(os.path.join(model_run_dir, KERAS_MODEL_FILE))
    if not model.sampled:  # what `sicot enroll` fits on the trained classes, once
        from sicot.trainer.enrollment import enrolled_model, prototypes

        start = time.perf_counter()
        # Over the cached features where the backbone has not changed since (no second pass).
        calibration = enrolled_model.fit_model_calibration(
            model, fn_args.train_files, tf_transform_output, eval_files=fn_args.eval_files,
            cached={split: (c.features, c.tokens, c.labels) for split, c in cache.items()})
        prototypes.save_calibration(calibration, os.path.join(model_run_dir,
                                                              prototypes.CALIBRATION_FILE))
        history["enrollment_calibration_seconds"] = time.perf_counter() - start
    cache.clear()
    from sicot.trainer.backbones.pretrained import TOWER_WEIGHTS_FILE, save_tower_weights

    # For `--backbone-weights` of a later run (e.g. on another dataset).
    save_tower_weights(model.visual_tower, os.path.join(model_run_dir, TOWER_WEIGHTS_FILE))
    with tf.io.gfile.GFile(os.path.join(model_run_dir, HISTORY_FILE), "w") as f:
        f.write(json.dumps({"config": config.to_dict(), "steps_per_epoch": steps_per_epoch,
                            "input": {**shuffle.to_dict(), "neighbour_label_share": grouped_share},
                            "warm_start": warm_start_report, "history": history}, indent=2))
    export_serving_model(model, tf_transform_output, serving_model_dir)
    from sicot.trainer.warm_start import save_for_warm_start

    if distribution.is_chief(tf_config):
        # Beside the serving model (not inside: the Pusher copies that folder only); the
        # chief's only, since a worker's temporary serving folder has the same parent.
        save_for_warm_start(model, class_names, tokens, serving_model_dir)
    distribution.cleanup_worker_dir(fn_args.model_run_dir, tf_config)
    distribution.cleanup_worker_dir(fn_args.serving_model_dir, tf_config)
    return model
