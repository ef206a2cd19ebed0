"""What a local pipeline run produced, read back from its MLMD store and the Evaluator output.

`latest_run(pipeline_root, pipeline_name)` lists each component execution of the newest run
with its state (COMPLETE, CACHED, FAILED...) and output artifact URIs; `band_metrics(uri)`
reads TFMA's per-slice metrics (overall and by band_xf) for both query modes;
`gate_failures(uri)` reads TFMA's validation result: which blessing gate failed and by how
much; `format_summary(...)` is what `sicot run` prints.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from sicot import contract
from sicot.pipeline import configs


@dataclasses.dataclass
class ComponentRun:
    node_id: str
    state: str  # MLMD execution state name: COMPLETE, CACHED, FAILED, RUNNING...
    outputs: Dict[str, List[str]]  # output key -> artifact URIs
    properties: Dict[str, Dict[str, object]]  # output key -> custom properties (first artifact)
    inputs: Dict[str, List[str]] = dataclasses.field(default_factory=dict)  # key -> URIs


def latest_run(metadata_path: str, pipeline_name: str) -> Dict[str, ComponentRun]:
    """node id -> ComponentRun of the newest pipeline run in a SQLite MLMD file."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    config = metadata.sqlite_metadata_connection_config(metadata_path)
    store = metadata_store.MetadataStore(config)
    runs = list(store.get_contexts_by_type("pipeline_run"))
    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is None or not runs:
        raise ValueError(f"no run of pipeline {pipeline_name!r} in {metadata_path}")
    pipeline_execution_ids = {e.id for e in store.get_executions_by_context(pipeline_ctx.id)}
    runs = [c for c in runs
            if {e.id for e in store.get_executions_by_context(c.id)} & pipeline_execution_ids]
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    executions = store.get_executions_by_context(run.id)
    result: Dict[str, ComponentRun] = {}
    prefix = pipeline_name + "."
    for execution in sorted(executions, key=lambda e: e.id):
        node_id = None
        for ctx in store.get_contexts_by_execution(execution.id):
            if ctx.name.startswith(prefix) and ctx.type_id == _type_id(store, "node"):
                node_id = ctx.name[len(prefix):]
        if node_id is None:
            continue
        outputs: Dict[str, List[str]] = {}
        props: Dict[str, Dict[str, object]] = {}
        all_events = store.get_events_by_execution_ids([execution.id])
        events = [e for e in all_events if e.type in (metadata_store_pb2.Event.OUTPUT,
                                                      metadata_store_pb2.Event.DECLARED_OUTPUT)]
        input_events = [e for e in all_events if e.type in (metadata_store_pb2.Event.INPUT,
                                                            metadata_store_pb2.Event.DECLARED_INPUT)]
        artifacts = {a.id: a for a in store.get_artifacts_by_id(
            [e.artifact_id for e in events + input_events])}
        inputs: Dict[str, List[str]] = {}
        for event in input_events:
            key = event.path.steps[0].key if event.path.steps else "?"
            inputs.setdefault(key, []).append(artifacts[event.artifact_id].uri)
        for event in events:
            key = event.path.steps[0].key if event.path.steps else "?"
            artifact = artifacts[event.artifact_id]
            outputs.setdefault(key, []).append(artifact.uri)
            if key not in props:
                props[key] = {k: _value(v) for k, v in artifact.custom_properties.items()}
        result[node_id] = ComponentRun(
            node_id=node_id,
            state=metadata_store_pb2.Execution.State.Name(execution.last_known_state),
            outputs=outputs, properties=props, inputs=inputs)
    return result


def _type_id(store, name: str) -> int:
    return store.get_context_type(name).id


def _value(v):
    for field in ("int_value", "double_value", "string_value"):
        if v.HasField(field):
            return getattr(v, field)
    return None


def band_metrics(evaluation_uri: str) -> Dict[Tuple[str, str], Dict[str, float]]:
    """(slice, query mode) -> {"top1", "top5", "count"} from a TFMA Evaluator output.

    slice is "overall" or a band name (many / medium / few).
    """
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.writers import eval_config_writer

    _, _, _, locations = eval_config_writer.load_eval_run(evaluation_uri)
    model_name = "candidate" if "candidate" in (locations or {}) else None
    result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
    table: Dict[Tuple[str, str], Dict[str, float]] = {}
    for slice_key, metrics in result.slicing_metrics:
        if not slice_key:
            name = contract.OVERALL
        elif len(slice_key) == 1 and slice_key[0][0] == contract.BAND_XF:
            band = slice_key[0][1]
            name = band.decode() if isinstance(band, bytes) else str(band)
        else:
            continue
        for mode in contract.QUERY_MODES:
            values = metrics.get(mode, {}).get("", {})
            row = {}
            for metric, short in (("sparse_categorical_accuracy", "top1"),
                                  ("sparse_top_k_categorical_accuracy", "top5"),
                                  ("example_count", "count")):
                if metric in values:
                    value = values[metric]
                    row[short] = float(value.get("doubleValue", value.get("value", 0.0)))
            if row:
                table[(name, mode)] = row
    return table


_METRIC_NAMES = {"sparse_categorical_accuracy": "top-1",
                 "sparse_top_k_categorical_accuracy": "top-5"}


@dataclasses.dataclass
class GateFailure:
    """One failed blessing gate of an Evaluator run.

    kind: "change" (fell against the latest blessed model: `value` is the change, negative
    for a drop, `limit` the allowed change, e.g. -0.01), "floor" (`value` below `limit`) or
    "missing" (the slice or metric was not computed, e.g. no few-shot example in the split).
    """

    kind: str
    slice: str   # "overall" or a band name
    mode: str    # query mode (image_only, image_text)
    metric: str  # "top-1" / "top-5" (or TFMA's metric name)
    value: Optional[float] = None
    limit: Optional[float] = None
    candidate: Optional[float] = None

    def describe(self) -> str:
        where = f"{self.slice} {self.mode} {self.metric}"
        if self.kind == "change":
            text = (f"gate '{where} change' failed: {self.value:+.4f} against the latest "
                    f"blessed model (allowed {self.limit:+.4f}, {-self.value * 100:.2f} points "
                    f"lost where at most {-self.limit * 100:.2f} may be)")
            if self.candidate is not None:
                text += f"; candidate {self.candidate:.4f}, baseline {self.candidate - self.value:.4f}"
            return text
        if self.kind == "floor":
            return (f"gate '{where} floor' failed: {self.value:.4f} < {self.limit:.4f} "
                    f"(short by {self.limit - self.value:.4f})")
        return f"gate '{where}' could not be checked: {self.value or 'not computed'}"


def _slice_name(single_slice_keys) -> str:
    if not single_slice_keys:
        return "overall"
    parts = []
    for key in single_slice_keys:
        value = key.bytes_value.decode() if key.bytes_value else (
            key.int64_value if key.int64_value else key.float_value)
        parts.append(str(value) if key.column == contract.BAND_XF else f"{key.column}={value}")
    return ",".join(parts)


def gate_failures(evaluation_uri: str) -> List[GateFailure]:
    """The blessing gates an Evaluator run failed (empty when it blessed the model)."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    if result.validation_ok:
        return []
    try:
        table = band_metrics(evaluation_uri)
    except Exception:  # noqa: BLE001 - the failures are still worth naming without values
        table = {}
    failures = []
    for per_slice in result.metric_validations_per_slice:
        name = _slice_name(per_slice.slice_key.single_slice_keys)
        for failure in per_slice.failures:
            key = failure.metric_key
            metric = _METRIC_NAMES.get(key.name, key.name)
            value = failure.metric_value.double_value.value
            threshold = failure.metric_threshold
            if not failure.metric_value.HasField("double_value"):
                # TFMA counts a threshold it could not check (metric not computed) as failed
                failures.append(GateFailure("missing", name, key.output_name, metric,
                                            " ".join(failure.message.split()) or None))
            elif threshold.HasField("change_threshold"):
                row = table.get((name, key.output_name), {})
                short = {"top-1": "top1", "top-5": "top5"}.get(metric)
                failures.append(GateFailure(
                    "change", name, key.output_name, metric, value,
                    threshold.change_threshold.absolute.value, row.get(short)))
            else:
                failures.append(GateFailure(
                    "floor", name, key.output_name, metric, value,
                    threshold.value_threshold.lower_bound.value))
    for missing in result.missing_slices:
        spec = dict(missing.feature_values)
        failures.append(GateFailure("missing", ",".join(spec.values()) or "overall", "*", "*",
                                    "slice missing from the evaluation"))
    return failures


def format_band_table(table: Dict[Tuple[str, str], Dict[str, float]]) -> str:
    order = [contract.OVERALL, *contract.BANDS]
    lines = [f"{'slice':<8} {'query':<11} {'top-1':>6} {'top-5':>6} {'count':>6}"]
    for name in order + sorted({n for n, _ in table} - set(order)):
        for mode in contract.QUERY_MODES:
            row = table.get((name, mode))
            if row is None:
                continue
            count = row.get("count")
            lines.append(f"{name:<8} {mode:<11} {row.get('top1', float('nan')):>6.3f} "
                         f"{row.get('top5', float('nan')):>6.3f} "
                         f"{'' if count is None else int(count):>6}")
    return "\n".join(lines)


def blessed_by_evaluator(runs: Dict[str, ComponentRun]) -> bool:
    evaluator = runs.get("Evaluator")
    return bool(evaluator) and evaluator.properties.get("blessing", {}).get("blessed") == 1


def format_summary(runs: Dict[str, ComponentRun], serving_dir: Optional[str] = None) -> str:
    """The text `sicot run` prints after a run."""
    lines = ["Components (state, outputs):"]
    for node_id, run in runs.items():
        lines.append(f"  {node_id:<32} {run.state}")
        for key, uris in sorted(run.outputs.items()):
            for uri in uris:
                lines.append(f"      {key}: {uri}")
    trainer = runs.get("Trainer")
    if trainer and trainer.outputs.get("model_run"):
        logdir = trainer.outputs["model_run"][0]
        lines.append(f"TensorBoard logs: {logdir}\n  open with: tensorboard --logdir {logdir}")
    enroller = runs.get("Enroller")
    if enroller and enroller.outputs.get("model"):
        model, quarantine = (enroller.properties.get(k, {}) for k in ("model", "quarantine"))
        lines.append(f"Enroller: catalogue {model.get('catalogue', '?')} enrolled, "
                     f"{model.get('enrolled_classes', '?')} enrolled classes "
                     f"({model.get('num_classes', '?')} in all); the enrolled model is the "
                     "candidate below")
        if quarantine.get("quarantined"):
            lines.append(f"  {quarantine['quarantined']} catalogue line(s)/photo(s) "
                         f"quarantined: {quarantine.get('file', '?')}")
        if model.get("enrolment_warnings"):
            lines.append(f"  WARNING: {model.get('enrolment_warning', '?')}")
    evaluator = runs.get("Evaluator")
    if evaluator and evaluator.outputs.get("evaluation"):
        blessed = evaluator.properties.get("blessing", {}).get("blessed")
        lines.append(f"Evaluation ({configs.EVALUATE_SPLIT} split), blessed: "
                     f"{'yes' if blessed == 1 else 'no'}")
        try:
            lines.append(format_band_table(band_metrics(evaluator.outputs["evaluation"][0])))
        except Exception as e:  # noqa: BLE001 - the summary must not hide the run's outcome
            lines.append(f"  (could not read the evaluation: {e})")
        if blessed != 1:
            try:
                failures = gate_failures(evaluator.outputs["evaluation"][0])
            except Exception as e:  # noqa: BLE001
                lines.append(f"  (could not read the blessing gates: {e})")
            else:
                lines += [f"  NOT BLESSED: {f.describe()}" for f in failures]
    error_report = runs.get("ErrorReport")
    if error_report and error_report.properties.get("report", {}).get("page"):
        props = error_report.properties["report"]
        if props.get("error"):
            lines.append(f"Error analysis: the serving signatures failed ({props['error']}); "
                         f"{props['page']}")
        else:
            lines.append(f"Error analysis: {props['page']} (open in a browser)")
    canary = runs.get("Canary")
    canary_blessed = None
    if canary and canary.outputs.get("blessing"):
        props = canary.properties.get("blessing", {})
        canary_blessed = props.get("blessed")
        report = canary.outputs["blessing"][0].rstrip("/") + "/canary_report.json"
        if canary_blessed == 1:
            p99 = props.get("max_p99_ms")
            lines.append("Canary: passed (every signature answered on 127.0.0.1"
                         + ("" if p99 is None else f", slowest p99 {p99:.1f} ms")
                         + f"); report {report}")
        else:
            lines.append(f"Canary: NOT BLESSED: {props.get('reason', '?')}; report {report}")
    pusher = runs.get("Pusher")
    if pusher:
        pushed = pusher.properties.get("pushed_model", {})
        if pushed.get("pushed") == 1:
            lines.append(f"Pushed model: {pushed.get('pushed_destination')}")
        else:
            why = ("the canary failed" if canary_blessed == 0 and blessed_by_evaluator(runs)
                   else "model not blessed")
            lines.append(f"Not pushed ({why}){'' if not serving_dir else '; serving dir ' + serving_dir + ' unchanged'}")
    scorer = runs.get("ScoringReport")
    if scorer and scorer.outputs.get("report"):
        props = scorer.properties.get("report", {})
        where = scorer.outputs["report"][0].rstrip("/") + "/predictions.jsonl"
        if props.get("skipped"):
            lines.append(f"Batch scoring: skipped: {props['skipped']}")
        else:
            lines.append(f"Batch scoring ({'pushed' if props.get('pushed') == 1 else 'NOT pushed'}"
                         f" model): {props.get('scored')} scored, {props.get('quarantined')} "
                         f"quarantined by ExampleGen, {props.get('suspects')} suspected "
                         f"mislabelled, {props.get('duplicate_pairs')} near-duplicate pairs; "
                         f"{where} (+ .suspects.jsonl, .duplicates.jsonl, .summary.json)")
    return "\n".join(lines)
