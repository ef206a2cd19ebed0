"""`sicot train`, `sicot evaluate` and `sicot score`.

    sicot train --data data/synth --model sicot --out runs/sicot [--epochs 10] [--image-size 64]
    sicot evaluate --model runs/sicot --data data/synth [--image-only] [--json OUT]
    sicot score --model runs/sicot --data data/synth --out scores/predictions.jsonl

`sicot train` = import (sicot.data.importer) -> Transform (transform_local, the TFX
preprocessing_fn on Beam) -> the TFX Trainer's own `run_fn`, so a standalone run trains and
exports exactly what the pipeline would. Output folder:
    OUT/export/<version>/   SavedModel (TF Serving base path OUT/export)
    OUT/run/                TensorBoard logs, model.keras, history.json
    OUT/train_report.json   settings, example counts, wall times
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

from sicot import contract
from sicot.errors import UserError
from sicot.trainer import options
from sicot.trainer.export.folders import new_version_dir

TRANSFORM_STAMP = "transform_stamp.json"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model (SICoT or a long-tail baseline) and export a SavedModel",
        description="Import a dataset folder, run the Transform, train with the TFX run_fn "
                    "and export the serving SavedModel.")
    p.add_argument("--data", required=True, help="dataset folder (train and test manifests)")
    p.add_argument("--out", required=True, help="output folder for the model")
    options.add_arguments(p, model_required=True)
    p.add_argument("--base-model", metavar="PATH",
                   help="warm start from this trained model (a `sicot train --out` folder, or "
                        "its export/warm_start folder): weights restored, classes and tokens "
                        "mapped by name, new classes initialised from their prototypes")
    p.add_argument("--work-dir", help="folder for imported and transformed examples (default "
                   "OUT/work; reused when the data and Transform settings are unchanged)")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser(
        "evaluate", help="top-1/top-5 accuracy of an exported model, overall and by band",
        description="Feed the test split through the model's serving signatures and report "
                    "accuracy overall and by many/medium/few class band.")
    p.add_argument("--model", required=True,
                   help="SavedModel folder, TF Serving base folder, or `sicot train --out` folder")
    p.add_argument("--data", required=True, help="dataset folder (train and test manifests)")
    p.add_argument("--image-only", action="store_true",
                   help="only the image-only signature (skip image + title/tags)")
    p.add_argument("--json", help="write the report here (default MODEL/evaluation.json when "
                   "MODEL is a `sicot train` folder, else only printed)")
    p.add_argument("--split", default=contract.TEST_SPLIT, choices=contract.SPLITS)
    p.add_argument("--report", metavar="DIR",
                   help="also write an error-analysis page DIR/report.html: band table, "
                        "accuracy against training count (PNG), most confused class pairs "
                        "with thumbnails, TFMA confusion matrix metrics")
    p.set_defaults(handler=_evaluate)

    score = subparsers.add_parser(
        "score", help="batch-score a dataset's listings (Beam): predictions, suspects, duplicates",
        description="Score every record of a dataset folder with an exported model on Apache "
                    "Beam: one prediction line per record (top-k classes and scores, image only "
                    "and image + title/tags), every bad record in a quarantine file with its "
                    "reason, a report of suspected mislabelled listings and of near-duplicate "
                    "listings across SKUs (docs/pipeline.md, Batch scoring).")
    score.add_argument("--model", required=True,
                       help="SavedModel folder, TF Serving base folder, or `sicot train --out` folder")
    score.add_argument("--data", required=True, help="dataset folder (train/eval/test manifests + images)")
    score.add_argument("--out", required=True,
                       help="predictions JSONL file; FILE.quarantine.jsonl, FILE.suspects.jsonl, "
                            "FILE.duplicates.jsonl and FILE.summary.json are written beside it")
    score.add_argument("--splits", default=None,
                       help="comma-separated splits to score (default: every manifest present)")
    score.add_argument("--image-only", action="store_true",
                       help="skip the image + title/tags scores")
    score.add_argument("--embedding", action="store_true",
                       help="add the visual embedding to each prediction line")
    score.add_argument("--batch-size", type=int, default=64)
    score.add_argument("--suspect-min-score", type=float, default=None,
                       help="image-only top-1 score from which a prediction that disagrees "
                            "with the label is a suspect (default 0.5)")
    score.add_argument("--duplicate-min-similarity", type=float, default=None,
                       help="cosine similarity of visual embeddings from which two listings "
                            "of different SKUs are near-duplicates (default 0.98)")
    score.add_argument("--beam-args", default="",
                       help="Beam flags, one quoted string joined with '=', e.g. "
                            "--beam-args=\"--direct_num_workers=2 --direct_running_mode=multi_processing\"")
    score.set_defaults(handler=run_score)


def _data_fingerprint(data_dir: str) -> dict:
    import tensorflow as tf

    from sicot.data.manifest import find_split_files
    from sicot.paths import absolute

    fingerprint = {}
    for split, p in sorted(find_split_files(data_dir).items()):
        stat = tf.io.gfile.stat(str(p))
        fingerprint[split] = [absolute(os.path.realpath(p) if isinstance(p, os.PathLike) else p),
                              stat.length, stat.mtime_nsec]
    return fingerprint


def _read_json(path: str):
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def _write_json(value, path: str) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=2))


def prepare_examples(data_dir: str, work_dir: str, transform_config, log=print):
    """Import + Transform into work_dir, reusing an earlier result for the same inputs."""
    from sicot.data.importer import ImportConfig, import_dataset
    from sicot.trainer.transform.run_local import TransformResult, run_transform

    import tensorflow as tf

    stamp_path = os.path.join(work_dir, TRANSFORM_STAMP)
    key = {"data": _data_fingerprint(data_dir), "transform": transform_config.to_dict()}
    if tf.io.gfile.exists(stamp_path):
        stamp = _read_json(stamp_path)
        if stamp.get("key") == key:
            log(f"sicot train: reusing the transformed examples in {work_dir}")
            return TransformResult(**stamp["result"])
    examples_dir = os.path.join(work_dir, "examples")
    transform_dir = os.path.join(work_dir, "transform")
    # A stale result (other data or settings, or a sicot whose TransformConfig changed) is
    # replaced, stamp first: tf.Transform refuses to publish into a non-empty folder, and the
    # importer's old shards must not mix with new ones. Only our own subfolders are removed.
    for stale in (stamp_path, examples_dir, transform_dir):
        if tf.io.gfile.exists(stale):
            log(f"sicot train: replacing the stale {stale} (data or Transform settings changed)")
            (tf.io.gfile.rmtree if tf.io.gfile.isdir(stale) else tf.io.gfile.remove)(stale)
    start = time.perf_counter()
    import_dataset(data_dir, examples_dir, ImportConfig(), log=log)
    log(f"sicot train: import took {time.perf_counter() - start:.0f}s; running the Transform")
    start = time.perf_counter()
    result = run_transform(examples_dir, transform_dir, transform_config)
    log(f"sicot train: Transform took {time.perf_counter() - start:.0f}s "
        f"({result.num_examples})")
    _write_json({"key": key, "result": dataclasses.asdict(result)}, stamp_path)
    return result


def _check_backbone_weights(config) -> None:
    """A missing weights file is reported before the import and Transform, not after."""
    if config.tower_weights == "imagenet":
        from sicot.trainer.backbones.imagenet_weights import imagenet_checkpoint_path

        imagenet_checkpoint_path()  # a UserError naming the package to install
    elif config.tower_weights:
        import tensorflow as tf

        if not tf.io.gfile.exists(config.backbone_weights):
            raise UserError(f"--backbone-weights {config.backbone_weights}: no such file")


def _train(args) -> int:
    transform_config, config = options.configs_from_args(args)
    import tensorflow as tf

    from sicot.paths import absolute

    if not tf.io.gfile.isdir(args.data):
        raise UserError(f"--data {args.data} does not exist or is not a folder")
    _check_backbone_weights(config)
    if args.base_model:
        from sicot.trainer.warm_start import find_base_model

        try:
            find_base_model(args.base_model)
        except ValueError as e:
            raise UserError(f"--base-model: {e}") from None
    out = absolute(args.out)  # local folders and URLs (gs://...) alike
    work_dir = absolute(args.work_dir or os.path.join(out, "work"))
    tf.io.gfile.makedirs(work_dir)
    wall = time.perf_counter()
    result = prepare_examples(args.data, work_dir, transform_config)

    from tfx.v1.components import FnArgs

    from sicot.trainer.task import run_fn

    num_train = result.num_examples["train"]
    if num_train == 0:
        raise UserError(f"--data {args.data}: the train split has no usable records")
    steps_per_epoch = math.ceil(num_train / config.batch_size)
    eval_split = "eval" if result.num_examples.get("eval") else (
        "test" if result.num_examples.get("test") else None)
    serving_dir = new_version_dir(os.path.join(out, "export"))
    fn_args = FnArgs(
        train_files=[result.transformed_files["train"]],
        eval_files=[result.transformed_files[eval_split]] if eval_split else None,
        transform_output=result.transform_output_dir,
        transform_graph_path=result.transform_output_dir,
        serving_model_dir=serving_dir, model_run_dir=os.path.join(out, "run"),
        train_steps=steps_per_epoch * max(1, config.epochs), eval_steps=None,
        base_model=args.base_model,
        # Frozen-backbone features persist beside the transformed examples: runs on the same
        # work dir (other presets, seeds) read them instead of running the backbone again.
        custom_config={"model": config.to_dict(),
                       "feature_cache_dir": os.path.join(work_dir, "feature_cache")})
    start = time.perf_counter()
    run_fn(fn_args)
    train_seconds = time.perf_counter() - start
    run_record = _read_json(os.path.join(out, "run", "history.json"))
    history = run_record["history"]
    report = {"model": args.model, "config": config.to_dict(),
              "transform": transform_config.to_dict(), "examples": result.num_examples,
              "eval_split": eval_split, "steps_per_epoch": steps_per_epoch,
              "train_seconds": train_seconds, "total_seconds": time.perf_counter() - wall,
              "epoch_seconds": history.get("epoch_seconds", []), "saved_model": serving_dir,
              "transform_output": result.transform_output_dir,
              "transformed_files": result.transformed_files,
              "warm_start": run_record.get("warm_start")}
    _write_json(report, os.path.join(out, "train_report.json"))
    print(f"sicot train: {args.model}: {config.epochs} epochs x {steps_per_epoch} steps in "
          f"{train_seconds:.0f}s; SavedModel {serving_dir}")
    return 0


def _evaluate(args) -> int:
    from sicot.trainer.evaluation.band_accuracy import evaluate_saved_model, format_table, write_json

    import tensorflow as tf

    if not tf.io.gfile.exists(args.model):
        raise UserError(f"--model {args.model} does not exist")
    report, records, predictions = evaluate_saved_model(
        args.model, args.data, image_only=args.image_only, split=args.split,
        return_predictions=True)
    print(format_table(report))
    if args.report:
        from sicot.trainer.evaluation import error_analysis

        out = os.path.abspath(args.report)
        confusion = error_analysis.tfma_confusion(
            report["saved_model"], records, os.path.join(out, "tfma_work"),
            error_analysis.class_names_of(report["saved_model"]))
        page = error_analysis.write_report(out, report, records, predictions, confusion)
        print(f"sicot evaluate: error analysis in {page}")
    path = args.json
    if path is None and tf.io.gfile.exists(os.path.join(args.model, "train_report.json")):
        path = os.path.join(args.model, "evaluation.json")
    if path:
        write_json(report, path)
        print(f"sicot evaluate: report written to {path}")
    return 0


def run_score(args) -> int:
    import shlex

    from sicot.trainer.evaluation.batch_scoring import ScoringConfig, format_summary, score_dataset
    from sicot.trainer.evaluation.band_accuracy import resolve_saved_model_dir

    if not os.path.isdir(args.data):
        raise UserError(f"--data {args.data} does not exist or is not a folder")
    if not os.path.exists(args.model):
        raise UserError(f"--model {args.model} does not exist")
    model_dir = resolve_saved_model_dir(args.model)
    settings = {"with_text": not args.image_only, "embedding": args.embedding,
                "batch_size": args.batch_size}
    if args.suspect_min_score is not None:
        settings["suspect_min_score"] = args.suspect_min_score
    if args.duplicate_min_similarity is not None:
        settings["duplicate_min_similarity"] = args.duplicate_min_similarity
    try:
        config = ScoringConfig(**settings)
    except ValueError as e:
        raise UserError(f"--batch-size/--suspect-min-score/--duplicate-min-similarity: {e}")
    splits = None
    if args.splits:
        splits = [s.strip() for s in args.splits.split(",") if s.strip()]
        unknown = sorted(set(splits) - {"train", "eval", "test"})
        if unknown:
            raise UserError(f"--splits: unknown split(s) {', '.join(unknown)}; choose from "
                            "train, eval, test")
    if os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a folder; give a file path")
    summary = score_dataset(model_dir, args.data, args.out, config, splits=splits,
                            beam_pipeline_args=shlex.split(args.beam_args))
    print(f"sicot score: model {model_dir}")
    print(format_summary(summary))
    return 0
