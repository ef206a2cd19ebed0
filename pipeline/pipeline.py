"""The SICoT TFX pipeline: ONE `create_pipeline(...)`, every setting a keyword argument.

  ExampleGen (ManifestExampleGen over a dataset folder, or ImportExampleGen over
    `<split>-*.tfrecord.gz`)
  -> StatisticsGen -> SchemaGen (inferred from train; free-text string domains dropped by
     CurateInferredSchema) or ImportSchemaGen (curated schema)
  -> ExampleValidator + UnseenLabelValidator (eval/test labels the train split never has)
  -> ValidationGate (raises on any anomaly of either; passes the schema on)
  -> Transform (analyze train; transform every split)
  -> Trainer (run_fn by dotted name; TensorBoard logs in the ModelRun artifact)
  -> Enroller (optional, `catalog`: the catalogue's SKUs enrolled into the trained model by
     `sicot enroll`'s code; its Model artifact, laid out like the Trainer's, is the candidate
     everything below evaluates, blesses and pushes)
  -> Evaluator (TFMA on the test split, sliced by band_xf; blessing gates against the latest
     blessed model) -> ErrorReport (report.html: band table, accuracy against training count,
     confused pairs with thumbnails, TFMA confusion matrix) and Canary (the candidate served on loopback by the `sicot serve` server,
     every signature asked with held-out records; an InfraBlessing)
  -> Pusher (TF Serving layout `<serving_dir>/<version>/`; only models both the Evaluator and
     the Canary blessed)
  -> BulkInferrer + ScoringReport (optional, `score_splits`: every example of those splits
     scored with the blessed candidate's `serving_examples` signature; predictions,
     suspected mislabelled and near-duplicate listings).

The pipeline never imports model code: Transform and Trainer get dotted names
(`configs.PREPROCESSING_FN`, `configs.RUN_FN`); only `sicot.contract` (names) is
shared.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from sicot import contract
from sicot.pipeline import configs

MANIFEST_EXTENSIONS = (".jsonl", ".csv")  # .jsonl wins when both exist (sicot.data.manifest)
TFRECORD_PATTERN = "{split}-*.tfrecord.gz"


SPAN = "{SPAN}"  # TFX's span placeholder in an ExampleGen split pattern


@dataclasses.dataclass(frozen=True)
class DatasetLayout:
    """What ExampleGen reads: the format and split name -> file pattern inside the data root
    (with `span_folder`, e.g. "day-{SPAN}", the patterns are "day-{SPAN}/train.jsonl"...)."""

    data_format: str  # "manifest" or "tfrecord"
    split_files: Dict[str, str]
    span_folder: Optional[str] = None

    @property
    def splits(self) -> List[str]:
        return list(self.split_files)


def latest_span_folder(data_root: str, span_folder: str) -> str:
    """The folder name of the highest span matching `span_folder` ("day-{SPAN}")."""
    import re

    import tensorflow as tf

    if span_folder.count(SPAN) != 1 or "/" in span_folder.strip("/"):
        raise ValueError(f"span folder {span_folder!r}: expected one folder name holding "
                         f"{SPAN} once, e.g. 'day-{SPAN}'")
    prefix, suffix = span_folder.split(SPAN)
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    spans = {}
    for entry in tf.io.gfile.listdir(data_root):
        match = pattern.match(entry.rstrip("/"))
        if match and tf.io.gfile.isdir(os.path.join(data_root, entry.rstrip("/"))):
            spans[int(match.group(1))] = entry.rstrip("/")
    if not spans:
        raise ValueError(f"data root {data_root} has no span folder matching {span_folder!r}")
    return spans[max(spans)]


def detect_dataset_layout(data_root: str, span_folder: Optional[str] = None) -> DatasetLayout:
    """Looks at a data root: manifests (`train.jsonl`...) or imported TFRecords; with
    `span_folder` ("day-{SPAN}"), at the latest span folder, and the split patterns carry the
    span placeholder so that ExampleGen picks up the newest span on every run.

    Raises ValueError naming the folder and what is missing: train and test are required,
    eval is optional (without it the Trainer validates on test, see `create_pipeline`).
    """
    import tensorflow as tf

    if not tf.io.gfile.isdir(data_root):
        raise ValueError(f"data root {data_root} is not a folder")
    if span_folder:
        latest = latest_span_folder(data_root, span_folder)
        layout = detect_dataset_layout(os.path.join(data_root, latest))
        return DatasetLayout(layout.data_format,
                             {s: f"{span_folder}/{p}" for s, p in layout.split_files.items()},
                             span_folder)
    manifests = {}
    for split in contract.SPLITS:
        for ext in MANIFEST_EXTENSIONS:
            if tf.io.gfile.exists(os.path.join(data_root, split + ext)):
                manifests[split] = split + ext
                break
    records = {split: TFRECORD_PATTERN.format(split=split) for split in contract.SPLITS
               if tf.io.gfile.glob(os.path.join(data_root, TFRECORD_PATTERN.format(split=split)))}
    if manifests and records:
        raise ValueError(
            f"data root {data_root} holds both manifests ({sorted(manifests.values())}) and "
            f"TFRecords ({sorted(records.values())}); keep one kind")
    layout = (DatasetLayout("manifest", manifests) if manifests
              else DatasetLayout("tfrecord", records))
    missing = [s for s in ("train", "test") if s not in layout.split_files]
    if missing:
        raise ValueError(
            f"data root {data_root} has no {' and no '.join(missing)} split: expected "
            + " / ".join(f"{s}.jsonl or {s}.csv" for s in missing)
            + " (dataset folder) or " + " / ".join(TFRECORD_PATTERN.format(split=s) for s in missing)
            + " (imported)")
    return layout


def _eval_config(thresholds: configs.BlessingThresholds):
    """TFMA config: metrics by slice (overall, band_xf) for both query modes, and the gates.

    Every threshold is a per-slice threshold: a MetricConfig's plain `threshold` would apply to
    every slice (many and medium bands included), not only the overall one.
    """
    import tensorflow_model_analysis as tfma

    label_key = contract.LABEL_XF
    overall_slice = tfma.SlicingSpec()
    few_slice = tfma.SlicingSpec(feature_values={contract.BAND_XF: contract.FEW})

    def gate(slicing_spec, max_drop: float, lower_bound: Optional[float] = None):
        threshold = tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_drop}))
        if lower_bound is not None:
            threshold.value_threshold.CopyFrom(
                tfma.GenericValueThreshold(lower_bound={"value": lower_bound}))
        return tfma.PerSliceMetricThreshold(slicing_specs=[slicing_spec], threshold=threshold)

    def metrics(mode: str):
        # Value floors on the image-only output only; change gates on both outputs.
        floors = mode == configs.BLESSING_QUERY_MODE
        return [
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(class_name="SparseCategoricalAccuracy", per_slice_thresholds=[
                gate(overall_slice, thresholds.max_overall_drop,
                     thresholds.overall_min_top1 if floors else None),
                gate(few_slice, thresholds.max_few_drop,
                     thresholds.few_min_top1 if floors else None)]),
            tfma.MetricConfig(class_name="SparseTopKCategoricalAccuracy", config='{"k": 5}',
                              per_slice_thresholds=[gate(few_slice, thresholds.max_few_drop)]),
        ] + ([tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot")]  # ErrorReport
             if mode == configs.BLESSING_QUERY_MODE else [])

    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=contract.EVAL_SIGNATURE,
            preprocessing_function_names=[contract.TRANSFORM_SIGNATURE],
            label_keys={mode: label_key for mode in contract.QUERY_MODES},
        )],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[contract.BAND_XF])],
        metrics_specs=[tfma.MetricsSpec(output_names=[mode], metrics=metrics(mode))
                       for mode in contract.QUERY_MODES],
    )


def create_pipeline(
    *,
    pipeline_name: str = configs.PIPELINE_NAME,
    pipeline_root: str,
    data_root: str,
    serving_dir: str,
    dataset_layout: Optional[DatasetLayout] = None,
    model_config: Optional[Mapping[str, Any]] = None,
    transform_config: Optional[Mapping[str, Any]] = None,
    import_config: Optional[Mapping[str, Any]] = None,
    schema_path: Optional[str] = configs.CURATED_SCHEMA,
    allow_unseen_labels: Sequence[str] = (),
    train_steps: Optional[int] = None,
    eval_steps: Optional[int] = None,
    thresholds: configs.BlessingThresholds = configs.BlessingThresholds(),
    canary_limits: Optional[Mapping[str, Any]] = None,
    score_splits: Sequence[str] = (),
    beam_pipeline_args: Optional[Sequence[str]] = None,
    metadata_connection_config=None,
    enable_cache: bool = True,
    trainer_custom_config: Optional[Mapping[str, Any]] = None,
    preprocessing_fn: str = configs.PREPROCESSING_FN,
    run_fn: str = configs.RUN_FN,
    stop_after: Optional[str] = None,
    rolling_spans: Optional[int] = None,
    warm_start: bool = False,
    catalog: Optional[str] = None,
    enroll_config: Optional[Mapping[str, Any]] = None,
):
    """Builds the SICoT `tfx.dsl.Pipeline`.

    Args:
      pipeline_name, pipeline_root: TFX pipeline name and artifact root.
      data_root: dataset folder (manifests + images) or folder of imported TFRecords.
      serving_dir: the Pusher's base directory (`<serving_dir>/<version>/saved_model.pb`).
      dataset_layout: what ExampleGen reads; None = `detect_dataset_layout(data_root)` (give
        it explicitly when compiling for a data root this machine cannot see).
      model_config: `sicot.trainer.model.config.ModelConfig` fields (e.g. {"preset":
        "sicot", "epochs": 1}); passed to run_fn as custom_config["model"].
      transform_config: `TransformConfig.to_dict()`; the Transform custom_config.
      import_config: `ImportConfig` fields for ManifestExampleGen (e.g. max_bad_fraction).
      schema_path: curated schema (ImportSchemaGen); None = SchemaGen infers it from the
        train split's statistics.
      allow_unseen_labels: splits (of "eval", "test") whose labels need not occur in the
        train split (open-set evaluation); by default a label the train split never has
        stops the run at the ValidationGate.
      train_steps, eval_steps: Trainer TrainArgs/EvalArgs num_steps; None lets run_fn run its
        epochs over the data.
      thresholds: Evaluator blessing gates.
      canary_limits: `sicot.serving.canary.CanaryLimits` fields (what the Canary sends and
        accepts: records, requests, p99 latency, agreement with the evaluated answers), e.g.
        {"max_p99_ms": 500}; checked by the Canary (the pipeline never imports serving code:
        the Canary calls `configs.CANARY_FN` by dotted name).
      score_splits: splits BulkInferrer scores with the candidate the Evaluator blessed,
        turned into reports by ScoringReport (e.g. ("train", "eval", "test")); empty = none.
      beam_pipeline_args: e.g. `configs.beam_pipeline_args("direct")`.
      metadata_connection_config: MLMD connection (the local runner uses SQLite under the
        pipeline root; None for Vertex).
      enable_cache: reuse outputs of component runs whose inputs and settings are unchanged.
      trainer_custom_config: extra Trainer custom_config (`configs.vertex_training_config`
        switches the Trainer to a Vertex AI training job).
      preprocessing_fn, run_fn: dotted names of the Transform and Trainer functions.
      stop_after: build only the components up to this one ("validation", "transform",
        "trainer"); None = the whole pipeline.
      rolling_spans: with a span layout (`DatasetLayout.span_folder`), Transform and the
        Trainer read the latest N spans ExampleGen has produced (a SpanRangeStrategy
        resolver), and Transform reuses its analyzer cache of the spans it has analysed
        before (the latest TransformCache); None = the current span only.
      warm_start: the Trainer gets the latest trained model as `base_model` (a
        LatestArtifactStrategy resolver over the Trainer's models; none on the first run)
        and run_fn starts from its weights (`sicot.trainer.warm_start`).
      catalog: a catalogue JSONL (`sicot.data.catalogue`; local path or URL the components
        can read): an Enroller after the Trainer enrols its SKUs (`configs.ENROLL_FN`, the
        code of `sicot enroll`) and its model is the candidate of the Evaluator, ErrorReport,
        Canary, Pusher and BulkInferrer; None = no Enroller, the Trainer's model is the
        candidate.
      enroll_config: `sicot.trainer.enrollment.catalogue.enroll_settings` fields (max_images_per_sku,
        use_text, trained_budget, scoring) for the Enroller.
    """
    from tfx import v1 as tfx

    from sicot.pipeline.canary import Canary
    from sicot.pipeline.enroller import Enroller, catalogue_fingerprint
    from sicot.pipeline.error_report import ErrorReport
    from sicot.pipeline.manifest_example_gen import ManifestExampleGen
    from sicot.pipeline.scoring_report import ScoringReport
    from sicot.pipeline.schema_curation import CurateInferredSchema
    from sicot.pipeline.unseen_label_validator import UnseenLabelValidator
    from sicot.pipeline.validation_gate import ValidationGate

    if stop_after not in (None, "validation", "transform", "trainer"):
        raise ValueError(f"stop_after must be validation, transform or trainer, got {stop_after!r}")
    unknown = sorted(set(allow_unseen_labels) - set(configs.HELD_OUT_SPLITS))
    if unknown:
        raise ValueError(f"allow_unseen_labels: unknown split(s) {unknown}; choose from "
                         f"{', '.join(configs.HELD_OUT_SPLITS)}")
    layout = dataset_layout or detect_dataset_layout(data_root)
    splits = layout.splits
    if rolling_spans is not None and (rolling_spans < 1 or not layout.span_folder):
        raise ValueError(f"rolling_spans={rolling_spans!r} needs a span layout "
                         f"(span_folder) and must be >= 1")
    components = []

    if layout.data_format == "manifest":
        example_gen = ManifestExampleGen(
            input_base=data_root, split_files=layout.split_files,
            import_config=dict(import_config or {}))
    elif layout.data_format == "tfrecord":
        example_gen = tfx.components.ImportExampleGen(
            input_base=data_root,
            input_config=tfx.proto.Input(splits=[
                tfx.proto.Input.Split(name=s, pattern=p) for s, p in layout.split_files.items()]))
    else:
        raise ValueError(f"unknown data format {layout.data_format!r}")
    components.append(example_gen)

    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    components.append(statistics_gen)
    if schema_path:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    else:
        # From train only: inferring over test too would make a feature missing in test
        # optional instead of an anomaly.
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True,
            exclude_splits=[s for s in splits if s != "train"])
    components.append(schema_gen)
    schema = schema_gen.outputs["schema"]
    if not schema_path:
        # Inferred string domains fit label but not free text (record_id, title...); the
        # label's goes too when some split may hold classes train never has.
        curation = CurateInferredSchema(schema=schema,
                                        keep_label_domain=not allow_unseen_labels)
        components.append(curation)
        schema = curation.outputs["curated_schema"]
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema)
    components.append(example_validator)
    # The curated schema leaves label values open and TFDV statistics keep only the top
    # 1,000 values: new classes in eval/test are found from the examples themselves.
    unseen_label_validator = UnseenLabelValidator(
        examples=example_gen.outputs["examples"],
        allowed_splits=",".join(sorted(allow_unseen_labels)))
    components.append(unseen_label_validator)
    gate = ValidationGate(anomalies=example_validator.outputs["anomalies"],
                          label_anomalies=unseen_label_validator.outputs["anomalies"],
                          schema=schema)
    components.append(gate)

    examples = example_gen.outputs["examples"]  # what Transform and the Trainer read
    transform_cache = None
    if rolling_spans:
        spans = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.SpanRangeStrategy,
            config={"range_config": tfx.proto.RangeConfig(
                rolling_range=tfx.proto.RollingRange(num_spans=rolling_spans))},
            examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                     producer_component_id=example_gen.id),
        ).with_id("rolling_spans_resolver")
        cache = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
            cache=tfx.dsl.Channel(type=tfx.types.standard_artifacts.TransformCache),
        ).with_id("latest_transform_cache_resolver")
        components += [spans, cache]
        examples, transform_cache = spans.outputs["examples"], cache.outputs["cache"]

    if stop_after != "validation":
        transform = tfx.components.Transform(
            examples=examples,
            analyzer_cache=transform_cache,
            schema=gate.outputs["validated_schema"],
            preprocessing_fn=preprocessing_fn,
            custom_config=dict(transform_config or {}),
            splits_config=tfx.proto.SplitsConfig(
                analyze=list(configs.ANALYZE_SPLITS), transform=splits))
        components.append(transform)

    if stop_after not in ("validation", "transform"):
        # The dataset format makes eval optional: without it the Trainer's per-epoch
        # validation reads test (monitoring only; blessing is the Evaluator's job).
        trainer_eval_split = "eval" if "eval" in splits else "test"
        custom_config = {"model": dict(model_config or {})}
        custom_config.update(trainer_custom_config or {})
        trainer_kwargs = dict(
            run_fn=run_fn,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=gate.outputs["validated_schema"],
            train_args=tfx.proto.TrainArgs(splits=["train"], num_steps=train_steps),
            eval_args=tfx.proto.EvalArgs(splits=[trainer_eval_split], num_steps=eval_steps),
            custom_config=custom_config)
        if warm_start:
            latest_model = tfx.dsl.Resolver(
                strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
                model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            ).with_id("latest_model_resolver")
            components.append(latest_model)
            trainer_kwargs["base_model"] = latest_model.outputs["model"]
        if custom_config.get("ai_platform_enable_vertex"):
            trainer = tfx.extensions.google_cloud_ai_platform.Trainer(**trainer_kwargs)
        else:
            trainer = tfx.components.Trainer(**trainer_kwargs)
        components.append(trainer)
        candidate = trainer.outputs["model"]
        if catalog:
            enroller = Enroller(
                trained_model=trainer.outputs["model"],
                trained_model_run=trainer.outputs["model_run"],
                transform_graph=transform.outputs["transform_graph"],
                transformed_examples=transform.outputs["transformed_examples"],
                catalog=catalog, catalog_fingerprint=catalogue_fingerprint(catalog),
                settings=json.dumps(dict(enroll_config or {}), sort_keys=True),
                enroll_fn=configs.ENROLL_FN)
            components.append(enroller)
            candidate = enroller.outputs["model"]
    elif catalog:
        raise ValueError(f"catalog {catalog}: the Enroller needs the Trainer "
                         f"(stop_after={stop_after!r})")

    if stop_after is None:
        model_resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        evaluator = tfx.components.Evaluator(
            examples=example_gen.outputs["examples"],
            example_splits=[configs.EVALUATE_SPLIT],
            model=candidate,
            baseline_model=model_resolver.outputs["model"],
            eval_config=_eval_config(thresholds))
        error_report = ErrorReport(
            model=candidate, examples=example_gen.outputs["examples"],
            evaluation=evaluator.outputs["evaluation"],
            transform_graph=transform.outputs["transform_graph"], split=configs.EVALUATE_SPLIT,
            band_edges=",".join(str(v) for v in (transform_config or {}).get("band_edges", ())))
        canary = Canary(
            model=candidate,
            model_blessing=evaluator.outputs["blessing"],
            examples=example_gen.outputs["examples"],
            limits=json.dumps(dict(canary_limits or {}), sort_keys=True),
            canary_fn=configs.CANARY_FN,
            refuse_enrolment_warnings=0 if thresholds.allow_enrolment_warnings else 1)
        pusher = tfx.components.Pusher(
            model=candidate,
            model_blessing=evaluator.outputs["blessing"],
            infra_blessing=canary.outputs["blessing"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)))
        components += [model_resolver, evaluator, error_report, canary, pusher]
        if score_splits:
            unknown = sorted(set(score_splits) - set(contract.SPLITS))
            if unknown:
                raise ValueError(f"score_splits: unknown split(s) {unknown}")
            bulk_inferrer = tfx.components.BulkInferrer(
                examples=example_gen.outputs["examples"], model=candidate,
                model_blessing=evaluator.outputs["blessing"],
                data_spec=tfx.proto.DataSpec(example_splits=list(score_splits)),
                model_spec=tfx.proto.ModelSpec(
                    model_signature_name=[contract.EXAMPLES_SIGNATURE]))
            scoring_report = ScoringReport(
                inference_result=bulk_inferrer.outputs["inference_result"],
                examples=example_gen.outputs["examples"],
                pushed_model=pusher.outputs["pushed_model"], splits=",".join(score_splits))
            components += [bulk_inferrer, scoring_report]

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or configs.beam_pipeline_args("direct")),
    )
