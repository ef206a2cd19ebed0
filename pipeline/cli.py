"""`sicot run` (the TFX pipeline on this machine) and `sicot compile` (Vertex pipeline JSON)."""
from __future__ import annotations

import argparse
import os
import shlex

from sicot import contract
from sicot.errors import UserError
from sicot.pipeline import configs
from sicot.trainer.enrollment import catalogue as enroll
from sicot.trainer import options


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run", help="run the TFX pipeline locally (LocalDagRunner, Beam, SQLite MLMD)",
        description="Run ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> "
                    "Transform -> Trainer -> Evaluator -> Pusher on this machine.")
    run.add_argument("--data", required=True,
                     help="dataset folder (train/test[/eval] .jsonl or .csv + images) or "
                          "folder of imported <split>-*.tfrecord.gz")
    run.add_argument("--pipeline-root", required=True,
                     help="artifact root; MLMD lives in <root>/metadata.sqlite")
    run.add_argument("--serving-dir", required=True,
                     help="the Pusher writes blessed models to <dir>/<version>/")
    _add_model_args(run)
    run.add_argument("--beam-preset", default="direct",
                     choices=configs.LOCAL_BEAM_PRESETS,
                     help="Beam runner preset (docs/pipeline.md); default direct (in memory)")
    run.add_argument("--beam-args", default="",
                     help="extra Beam flags, one quoted string joined with '=' since it "
                          "starts with '--', e.g. --beam-args=\"--direct_num_workers=2 "
                          "--direct_running_mode=multi_processing\" (appended to the preset's)")
    run.add_argument("--no-cache", action="store_true",
                     help="re-run every component even if its inputs are unchanged")
    run.add_argument("--max-bad-fraction", type=float, default=None,
                     help="fail ExampleGen when a split has a larger share of bad records")
    run.add_argument("--metadata-path", default=None,
                     help="local SQLite MLMD file (default <pipeline-root>/metadata.sqlite; "
                          "required when the pipeline root is remote, e.g. gs://)")
    run.add_argument("--pipeline-name", default="sicot")
    run.set_defaults(handler=_run)

    comp = subparsers.add_parser(
        "compile", help="compile the pipeline for Vertex AI Pipelines (Kubeflow V2 JSON)")
    comp.add_argument("--target", required=True, choices=["vertex"])
    comp.add_argument("--out", required=True, help="pipeline JSON file to write")
    comp.add_argument("--image", default=None,
                      help="container image holding the sicot package "
                           "(default: the TFX 1.16 image, which lacks it)")
    comp.add_argument("--data", default="gs://YOUR_BUCKET/sicot/data")
    comp.add_argument("--data-format", default="jsonl", choices=["jsonl", "csv", "tfrecord"])
    comp.add_argument("--no-eval-split", action="store_true",
                      help="the dataset has no eval split (the Trainer validates on test)")
    comp.add_argument("--pipeline-root", default="gs://YOUR_BUCKET/sicot/tfx")
    comp.add_argument("--serving-dir", default="gs://YOUR_BUCKET/sicot/serving")
    _add_model_args(comp, schema_default=None)
    comp.add_argument("--dataflow-project", default=None,
                      help="run the Beam components on Dataflow in this project")
    comp.add_argument("--dataflow-region", default=None)
    comp.add_argument("--dataflow-temp", default=None, help="gs:// temp location for Dataflow")
    comp.add_argument("--dataflow-setup-file", default=None,
                      help="setup.py path inside the image (default: this repository's)")
    comp.add_argument("--vertex-project", default=None,
                      help="train on a Vertex AI custom job in this project")
    comp.add_argument("--vertex-region", default="us-central1")
    comp.add_argument("--machine-type", default="n1-standard-8")
    comp.add_argument("--gpu-type", default="NVIDIA_TESLA_T4")
    comp.add_argument("--gpu-count", type=int, default=1)
    comp.add_argument("--vertex-workers", type=int, default=1,
                      help="training replicas (default 1); more than 1 trains with "
                           "MultiWorkerMirroredStrategy, the chief exports")
    comp.add_argument("--pipeline-name", default="sicot")
    comp.set_defaults(handler=_compile)


def _add_model_args(parser: argparse.ArgumentParser, schema_default="curated") -> None:
    options.add_arguments(parser)
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--eval-steps", type=int, default=None)
    parser.add_argument("--schema", default=schema_default,
                        help="'curated' (pipeline/schema/schema.pbtxt), 'infer' (SchemaGen "
                             "from the train split) or a schema.pbtxt path")
    parser.add_argument("--allow-unseen-labels", default="", metavar="SPLITS",
                        help="comma-separated splits (eval, test) that may hold labels the "
                             "train split never has; by default such labels stop the run "
                             "at validation")
    parser.add_argument("--span-folder", default=None, metavar="PATTERN",
                        help="daily data: the data root holds one dataset folder per span, "
                             "named by PATTERN with {SPAN} for the span number (e.g. "
                             "'day-{SPAN}'); each run reads the latest span")
    parser.add_argument("--rolling-spans", type=int, default=None, metavar="N",
                        help="with --span-folder: Transform and the Trainer read the latest N "
                             "spans (Transform reuses its analyzer cache of earlier spans)")
    parser.add_argument("--warm-start", action="store_true",
                        help="the Trainer starts from the latest trained model (classes and "
                             "tokens mapped by name, new classes from their prototypes)")
    gates = parser.add_argument_group(
        "blessing gates (Evaluator; docs/pipeline.md)",
        "A candidate is blessed only if it passes every gate. Change gates compare it with the "
        "latest blessed model on the test split, for image-only and image + text queries; "
        "they are skipped while no model has been blessed.")
    gates.add_argument("--min-top1", type=float, default=None, metavar="F",
                       help="floor on overall image-only top-1 (default 0.0)")
    gates.add_argument("--min-few-top1", type=float, default=None, metavar="F",
                       help="floor on few-shot band image-only top-1 (default 0.0)")
    gates.add_argument("--max-overall-drop", type=float, default=None, metavar="F",
                       help="largest drop of overall top-1 against the latest blessed model "
                            "(default 0.005 = 0.5 points)")
    gates.add_argument("--max-few-drop", type=float, default=None, metavar="F",
                       help="largest drop of few-shot band top-1 and top-5 against the latest "
                            "blessed model (default 0.01 = 1 point)")
    gates.add_argument("--allow-enrolment-warnings", action="store_true",
                       help="with --catalog: push the enrolled model even when the enrolment "
                            "check warned that enrolled SKUs would almost never be named "
                            "(default: the canary refuses it, with the warning as reason)")
    canary = parser.add_argument_group(
        "canary (between Evaluator and Pusher; docs/reliability.md)",
        "The blessed candidate is served on 127.0.0.1 by the server `sicot serve` runs and every "
        "signature is asked with held-out records; it is pushed only if all answers pass.")
    canary.add_argument("--canary-max-p99-ms", type=float, default=None, metavar="MS",
                        help="largest p99 latency of a single-row gRPC request, per signature "
                             "(default 1000)")
    canary.add_argument("--canary-records", type=int, default=None, metavar="N",
                        help="held-out records per batch request (default 16)")
    canary.add_argument("--canary-requests", type=int, default=None, metavar="N",
                        help="timed single-row requests per signature (default 20)")
    enrol = parser.add_argument_group(
        "catalogue enrolment (Enroller after the Trainer; docs/pipeline.md)",
        "With --catalog, the SKUs of a catalogue JSONL are enrolled into the trained model by "
        "the code of `sicot enroll` (no gradient step), and the enrolled model is the one the "
        "Evaluator, the canary and the Pusher evaluate, bless and push. Bad catalogue lines are "
        "quarantined with their line and reason (the Enroller's quarantine artifact).")
    enrol.add_argument("--catalog", default=None, metavar="FILE.jsonl",
                       help="catalogue to enrol after training ({label, title, tags, images} "
                            "per line, photos relative to its folder)")
    enroll.add_enroll_options(enrol)
    parser.add_argument("--score-splits", default="", metavar="SPLITS",
                        help="batch-score these splits (e.g. train,eval,test) with the blessed "
                             "candidate: predictions, suspected mislabelled and near-duplicate "
                             "listings (BulkInferrer + ScoringReport; default none)")


def _settings(args) -> dict:
    """create_pipeline keyword arguments shared by run and compile; UserError on bad values."""
    transform, model = options.configs_from_args(args)
    for name in ("train_steps", "eval_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")

    chosen = {field: getattr(args, flag) for field, flag in (
        ("overall_min_top1", "min_top1"), ("few_min_top1", "min_few_top1"),
        ("max_overall_drop", "max_overall_drop"), ("max_few_drop", "max_few_drop"))
        if getattr(args, flag) is not None}
    if args.allow_enrolment_warnings:
        chosen["allow_enrolment_warnings"] = True
    try:
        thresholds = configs.BlessingThresholds(**chosen)
    except ValueError as e:
        raise UserError(str(e).replace("BlessingThresholds.", "threshold ")) from e

    # CanaryLimits fields (serving code checks them too; the pipeline never imports it)
    canary_limits = {}
    for field, flag, minimum in (("max_p99_ms", "canary_max_p99_ms", 0.0),
                                 ("num_records", "canary_records", 1),
                                 ("requests_per_signature", "canary_requests", 1)):
        value = getattr(args, flag)
        if value is None:
            continue
        if value < minimum or (field == "max_p99_ms" and value <= 0):
            raise UserError(f"--{flag.replace('_', '-')} {value}: must be "
                            f"{'> 0' if field == 'max_p99_ms' else '>= 1'}")
        canary_limits[field] = value

    if args.schema in (None, "infer"):
        schema_path = None
    elif args.schema == "curated":
        schema_path = configs.CURATED_SCHEMA
    else:
        from sicot.paths import is_remote

        if not is_remote(args.schema) and not os.path.isfile(args.schema):
            raise UserError(f"--schema {args.schema}: no such file")
        schema_path = args.schema
    allow_unseen_labels = [s.strip() for s in args.allow_unseen_labels.split(",") if s.strip()]
    unknown = sorted(set(allow_unseen_labels) - set(configs.HELD_OUT_SPLITS))
    if unknown:
        raise UserError(f"--allow-unseen-labels: unknown split(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(configs.HELD_OUT_SPLITS)}")
    score_splits = [s.strip() for s in args.score_splits.split(",") if s.strip()]
    unknown = sorted(set(score_splits) - set(contract.SPLITS))
    if unknown:
        raise UserError(f"--score-splits: unknown split(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(contract.SPLITS)}")
    if args.rolling_spans is not None and (args.rolling_spans < 1 or not args.span_folder):
        raise UserError(f"--rolling-spans {args.rolling_spans}: needs --span-folder and N >= 1")
    if args.span_folder and args.span_folder.count("{SPAN}") != 1:
        raise UserError(f"--span-folder {args.span_folder!r}: must hold {{SPAN}} once, e.g. "
                        "'day-{SPAN}'")
    enroll_config = enroll.enroll_settings_from_args(args)
    if not args.catalog and enroll_config != enroll.enroll_settings():
        raise UserError("--max-images-per-sku, --no-text, --trained-budget, --scoring and "
                        "--max-trained-drop set the enrolment of --catalog: pass --catalog "
                        "FILE.jsonl too")
    return dict(
        catalog=args.catalog or None,
        enroll_config=enroll_config if args.catalog else None,
        rolling_spans=args.rolling_spans,
        warm_start=args.warm_start,
        pipeline_name=args.pipeline_name,
        score_splits=score_splits,
        model_config=model.to_dict(),
        transform_config=transform.to_dict(),
        schema_path=schema_path,
        allow_unseen_labels=allow_unseen_labels,
        train_steps=args.train_steps,
        eval_steps=args.eval_steps,
        thresholds=thresholds,
        canary_limits=canary_limits,
    )


def _run(args) -> int:
    from sicot.paths import absolute, is_remote
    from sicot.pipeline import local_runner, run_summary
    from sicot.pipeline import pipeline as sicot_pipeline

    data = absolute(args.data)  # a local folder or a URL (gs://..., any tf.io.gfile scheme)
    try:
        layout = sicot_pipeline.detect_dataset_layout(data, span_folder=args.span_folder)
    except ValueError as e:
        raise UserError(f"--data: {e}") from e
    if args.max_bad_fraction is not None and not 0.0 <= args.max_bad_fraction <= 1.0:
        raise UserError(f"--max-bad-fraction must be in [0, 1], got {args.max_bad_fraction}")
    settings = _settings(args)
    if args.catalog:
        settings["catalog"] = absolute(args.catalog)
        if not is_remote(settings["catalog"]) and not os.path.isfile(settings["catalog"]):
            raise UserError(f"--catalog {args.catalog}: no such file")
    try:
        beam_args = configs.beam_pipeline_args(args.beam_preset,
                                               extra=shlex.split(args.beam_args))
    except ValueError as e:
        raise UserError(f"--beam-preset/--beam-args: {e}") from e
    pipeline_root = absolute(args.pipeline_root)
    serving_dir = absolute(args.serving_dir)
    if args.metadata_path:
        if is_remote(args.metadata_path):
            raise UserError(f"--metadata-path {args.metadata_path}: MLMD's SQLite file must be "
                            "local")
        metadata = os.path.abspath(args.metadata_path)
    elif is_remote(pipeline_root):
        raise UserError(f"--pipeline-root {pipeline_root} is remote: MLMD's SQLite file cannot "
                        "live there; pass --metadata-path LOCAL_FILE")
    else:
        metadata = local_runner.metadata_path(pipeline_root)
    import_config = ({} if args.max_bad_fraction is None
                     else {"max_bad_fraction": args.max_bad_fraction})
    print(f"sicot run: {layout.data_format} dataset {data} (splits {', '.join(layout.splits)})"
          + ("" if "eval" in layout.splits else "; no eval split: the Trainer validates on test"))
    failure = None
    try:
        local_runner.run_local(
            data_root=data, pipeline_root=pipeline_root, serving_dir=serving_dir,
            dataset_layout=layout, beam_pipeline_args=beam_args, metadata_file=metadata,
            enable_cache=not args.no_cache, import_config=import_config, progress=True,
            **settings)
    except Exception as e:  # noqa: BLE001 - print what ran before failing
        failure = e
    try:
        runs = run_summary.latest_run(metadata, args.pipeline_name)
        print(run_summary.format_summary(runs, serving_dir))
    except Exception as e:  # noqa: BLE001
        print(f"(no run summary: {e})")
    if failure is not None:
        print(f"sicot run: the pipeline failed: {type(failure).__name__}: {failure}")
        print("Fix the cause and run the same command again: components whose inputs did not "
              "change are reused from the cache, so the run resumes at the failed component.")
        return 1
    return 0


def _compile(args) -> int:
    from sicot.pipeline import kubeflow_v2_runner
    from sicot.pipeline import pipeline as sicot_pipeline

    settings = _settings(args)
    if args.rolling_spans:
        # tfx/orchestration/kubeflow/v2/step_builder.py (TFX 1.16) compiles resolver nodes
        # of LatestArtifactStrategy and LatestBlessedModelStrategy only.
        raise UserError("--rolling-spans: TFX 1.16's Kubeflow V2 / Vertex compiler supports "
                        "only LatestArtifactStrategy and LatestBlessedModelStrategy resolvers, "
                        "not the SpanRangeStrategy a rolling window needs; on Vertex each run "
                        "trains on the latest span (with --warm-start from the last model)")
    if args.catalog:
        from sicot.paths import is_remote

        if not is_remote(args.catalog):
            raise UserError(f"--catalog {args.catalog}: the compiled pipeline runs on other "
                            "machines, which cannot read a file of this one; give the URL of "
                            "a copy they can read (gs://BUCKET/catalogue/catalogue.jsonl, its "
                            "photos beside it)")
    splits = [s for s in contract.SPLITS if not (args.no_eval_split and s == contract.EVAL_SPLIT)]
    folder = f"{args.span_folder}/" if args.span_folder else ""
    if args.data_format == "tfrecord":
        layout = sicot_pipeline.DatasetLayout(
            "tfrecord", {s: folder + sicot_pipeline.TFRECORD_PATTERN.format(split=s)
                         for s in splits}, args.span_folder)
    else:
        layout = sicot_pipeline.DatasetLayout(
            "manifest", {s: f"{folder}{s}.{args.data_format}" for s in splits},
            args.span_folder)
    beam_args = None
    if args.dataflow_project:
        try:
            beam_args = configs.beam_pipeline_args(
                "dataflow", project=args.dataflow_project, region=args.dataflow_region,
                temp_location=args.dataflow_temp, setup_file=args.dataflow_setup_file)
        except ValueError as e:
            raise UserError(f"--dataflow-*: {e}") from e
    trainer_custom_config = None
    if args.vertex_project:
        if not args.image:
            raise UserError("--vertex-project needs --image (the training container)")
        if args.vertex_workers < 1:
            raise UserError(f"--vertex-workers {args.vertex_workers}: must be >= 1")
        trainer_custom_config = configs.vertex_training_config(
            project=args.vertex_project, region=args.vertex_region, image=args.image,
            machine_type=args.machine_type, accelerator_type=args.gpu_type,
            accelerator_count=args.gpu_count, worker_count=args.vertex_workers)
    out = kubeflow_v2_runner.compile_vertex(
        output_file=args.out, image=args.image or kubeflow_v2_runner.DEFAULT_IMAGE,
        data_root=args.data, pipeline_root=args.pipeline_root, serving_dir=args.serving_dir,
        dataset_layout=layout, beam_pipeline_args=beam_args,
        trainer_custom_config=trainer_custom_config, **settings)
    print(f"sicot compile: wrote {out}")
    if not args.image:
        print("note: the default image lacks the sicot package; pass --image with one that "
              "has it before submitting (docs/pipeline.md)")
    return 0
