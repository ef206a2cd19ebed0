"""Canary: serve a candidate SavedModel on loopback and check it answers, before it is pushed.

What TFX's InfraValidator does with a TF Serving container (it needs Docker or Kubernetes, which
this project's machines do not have), done with the server `sicot serve` runs:

1. the candidate is staged as version 1 of a temporary TF Serving base path (copied the way
   the Pusher copies, `saved_model.pb` last) and loaded by `ModelServer` on 127.0.0.1 (ports
   picked by the OS), exactly as `sicot serve` would load a pushed version (warm-up records
   included);
2. the real `tensorflow-serving-api` client asks ModelService.GetModelStatus whether the
   version is AVAILABLE (a load failure is reported with the server's own error) and
   PredictionService.GetModelMetadata for every signature;
3. for EVERY signature, inputs are built from real records (image, title, tags, or a
   serialized tf.Example of them); a signature needing an input the canary cannot build is a
   failure, not a skip. One batch request per signature checks the answers:
     * every output has the batch size as its first dimension and finite values;
     * `classes`/`scores`/`class_ids` (top-k answers): scores in [0, 1], best first, class
       names non-empty; `embedding` finite;
     * outputs named after a query mode (`image_only`, `image_text`: class probabilities)
       sum to 1 per row;
     * the served answers are the evaluated ones: the top-1 class id of each top-k
       signature is the arg max of the probability output of its query mode
       (`serving_default` and `serving_examples` -> `image_only`, `serving_image_text` ->
       `image_text`; ties within 1e-4 count as agreeing). This catches a serving input path
       that differs from the one the Evaluator measured (training/serving skew);
     * REST answers `serving_default` with the same top-1 as gRPC;
   then `requests_per_signature` single-row gRPC requests per signature measure latency
   (p50 / p99 / max), checked against `max_p99_ms`;
4. the server is stopped and the staging folder removed; `CanaryReport.passed` says whether
   every check held, `failures` lists each one that did not, in words.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from typing import Mapping, Sequence

import numpy as np

from sicot import contract

log = logging.getLogger(__name__)

IMAGE_ONLY_OUTPUT, IMAGE_TEXT_OUTPUT = contract.IMAGE_ONLY, contract.IMAGE_TEXT
# signature -> the probability output of eval_examples its top-1 must agree with
SERVED_QUERY_MODE = {contract.IMAGE_SIGNATURE: IMAGE_ONLY_OUTPUT,
                     contract.EXAMPLES_SIGNATURE: IMAGE_ONLY_OUTPUT,
                     contract.IMAGE_TEXT_SIGNATURE: IMAGE_TEXT_OUTPUT}
PROBABILITY_SIGNATURE = contract.EVAL_SIGNATURE
EXAMPLES_INPUT = contract.EXAMPLES_INPUT
TIE_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class CanaryLimits:
    """What the canary sends and what it accepts.

    Attributes:
      num_records: records (from the eval split) sent in each batch request.
      requests_per_signature: single-row requests per signature timed for latency.
      max_p99_ms: largest allowed p99 latency of a single-row gRPC request, per signature
        (client-side wall time on loopback; generous by default for a shared 2-core CPU).
      min_agreement: share of rows whose served top-1 must equal the evaluated arg max.
      load_timeout_s: how long the candidate may take to become AVAILABLE.
    """

    num_records: int = 16
    requests_per_signature: int = 20
    max_p99_ms: float = 1000.0
    min_agreement: float = 1.0
    load_timeout_s: float = 300.0

    def __post_init__(self):
        if self.num_records < 1 or self.requests_per_signature < 1:
            raise ValueError("CanaryLimits: num_records and requests_per_signature must be >= 1")
        if self.max_p99_ms <= 0:
            raise ValueError(f"CanaryLimits.max_p99_ms must be > 0, got {self.max_p99_ms!r}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"CanaryLimits.min_agreement must be in [0, 1], got "
                             f"{self.min_agreement!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SignatureResult:
    name: str
    requests: int = 0
    latencies_ms: list = dataclasses.field(default_factory=list)
    agreement: float | None = None  # share of rows agreeing with the evaluated arg max
    accuracy: float | None = None   # served top-1 == the record's label (informative only)

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms, dtype=float)
        out = {"requests": self.requests, "agreement": self.agreement, "accuracy": self.accuracy}
        if lat.size:
            out.update(p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
                       max_ms=float(lat.max()))
        return out


@dataclasses.dataclass
class CanaryReport:
    passed: bool
    failures: list
    signatures: dict  # name -> SignatureResult.summary()
    load_seconds: float | None = None
    records: int = 0
    limits: dict = dataclasses.field(default_factory=dict)

    @property
    def max_p99_ms(self) -> float | None:
        values = [s["p99_ms"] for s in self.signatures.values() if "p99_ms" in s]
        return max(values) if values else None

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failures": list(self.failures),
                "signatures": self.signatures, "load_seconds": self.load_seconds,
                "records": self.records, "max_p99_ms": self.max_p99_ms, "limits": self.limits}


def _copy_tree(src: str, dst: str) -> None:
    """Copies a SavedModel folder (any tf.io.gfile scheme), `saved_model.pb` last."""
    import tensorflow as tf

    last = []
    for folder, _, files in tf.io.gfile.walk(src):
        rel = os.path.relpath(folder, src)
        target = os.path.join(dst, rel) if rel != "." else dst
        os.makedirs(target, exist_ok=True)
        for name in files:
            pair = (os.path.join(folder, name), os.path.join(target, name))
            if rel == "." and name == "saved_model.pb":
                last.append(pair)
            else:
                tf.io.gfile.copy(*pair, overwrite=True)
    if not last:
        raise FileNotFoundError(f"{src}: no saved_model.pb")
    tf.io.gfile.copy(*last[0], overwrite=True)


def serialized_example(record: Mapping[str, bytes]) -> bytes:
    """A raw tf.Example of the record's features, without the label (as at serving)."""
    import tensorflow as tf

    feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
             for k, v in record.items() if k != contract.LABEL_KEY and isinstance(v, bytes)}
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def build_signature_inputs(input_names: Sequence[str], records: Sequence[Mapping[str, bytes]]):
    """{input name: [B] object array} for a signature, from raw records; ValueError naming an
    input that cannot be built from a record."""
    inputs = {}
    for name in input_names:
        if name in (contract.IMAGE_KEY, contract.TITLE_KEY, contract.TAGS_KEY):
            values = [r.get(name, b"") for r in records]
        elif name == EXAMPLES_INPUT:
            values = [serialized_example(r) for r in records]
        else:
            raise ValueError(f"input {name!r} cannot be built from a record (the canary "
                             f"builds {contract.IMAGE_KEY}, {contract.TITLE_KEY}, "
                             f"{contract.TAGS_KEY} and {EXAMPLES_INPUT})")
        inputs[name] = np.array(values, dtype=object)
    return inputs


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_outputs(signature: str, outputs: Mapping[str, np.ndarray], rows: int) -> list[str]:
    """Shape and value checks of one batch answer; returns failures in words."""
    problems = []
    for key, value in outputs.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != rows:
            problems.append(f"{signature}: output {key!r} has shape {list(value.shape)}, "
                            f"expected {rows} rows")
            continue
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            problems.append(f"{signature}: output {key!r} holds NaN or infinite values")
    if problems:
        return problems
    if contract.SCORES_OUTPUT in outputs:
        scores = np.asarray(outputs[contract.SCORES_OUTPUT], dtype=float)
        if scores.ndim != 2 or scores.shape[1] < 1:
            problems.append(f"{signature}: scores have shape {list(scores.shape)}, expected "
                            f"[{rows}, k]")
        else:
            if np.any(scores < -1e-6) or np.any(scores > 1 + 1e-6):
                problems.append(f"{signature}: scores outside [0, 1] "
                                f"(min {scores.min():.4g}, max {scores.max():.4g})")
            if np.any(np.diff(scores, axis=1) > 1e-6):
                problems.append(f"{signature}: scores are not sorted best first")
        if contract.CLASSES_OUTPUT in outputs:
            classes = np.asarray(outputs[contract.CLASSES_OUTPUT])
            if classes.shape != scores.shape:
                problems.append(f"{signature}: classes shape {list(classes.shape)} != scores "
                                f"shape {list(scores.shape)}")
            elif any(not _text(c) for c in classes.ravel()):
                problems.append(f"{signature}: empty class name in the answer")
        if contract.CLASS_IDS_OUTPUT in outputs and \
                np.asarray(outputs[contract.CLASS_IDS_OUTPUT]).shape != scores.shape:
            problems.append(f"{signature}: class_ids shape != scores shape")
    for mode in (IMAGE_ONLY_OUTPUT, IMAGE_TEXT_OUTPUT):
        if mode in outputs:
            probs = np.asarray(outputs[mode], dtype=float)
            sums = probs.reshape(rows, -1).sum(axis=1)
            if np.any(np.abs(sums - 1.0) > 1e-3):
                problems.append(f"{signature}: output {mode!r} rows do not sum to 1 "
                                f"(sums {np.round(sums[:4], 4).tolist()}...)")
    return problems


def agreement(served_ids: np.ndarray, probabilities: np.ndarray) -> float:
    """Share of rows whose served top-1 id is (within TIE_TOLERANCE) the arg max."""
    probabilities = np.asarray(probabilities, dtype=float)
    served = np.asarray(served_ids).astype(int)
    if served.max(initial=0) >= probabilities.shape[1] or served.min(initial=0) < 0:
        return 0.0
    picked = probabilities[np.arange(len(served)), served]
    return float(np.mean(picked >= probabilities.max(axis=1) - TIE_TOLERANCE))


def run_canary(model_dir: str, records: Sequence[Mapping[str, bytes]],
               limits: CanaryLimits = CanaryLimits(), model_name: str = "canary",
               work_dir: str | None = None) -> CanaryReport:
    """Serves `model_dir` on 127.0.0.1 and checks it with `records` (raw feature dicts:
    image, title, tags, label, record_id as bytes). Never raises for a bad model: every
    problem is a failure in the report."""
    from sicot.serving.client import ClientError, GrpcClient, RestClient
    from sicot.serving.server import ModelServer, ServerOptions

    records = list(records)[:limits.num_records]
    failures: list[str] = []
    results: dict[str, SignatureResult] = {}
    if not records:
        return CanaryReport(False, ["no records to build requests from"], {},
                            limits=limits.to_dict())
    staging = tempfile.mkdtemp(prefix="sicot-canary-", dir=work_dir)
    base_path = os.path.join(staging, model_name)
    server = grpc_client = None
    load_seconds = None
    try:
        try:
            _copy_tree(model_dir, os.path.join(base_path, "1"))
        except Exception as e:  # noqa: BLE001
            return CanaryReport(False, [f"cannot stage the candidate from {model_dir}: {e}"], {},
                                records=len(records), limits=limits.to_dict())
        started = time.monotonic()
        # The same server and options `sicot serve` uses; loopback, OS-chosen ports, no polling.
        server = ModelServer(ServerOptions(model_name=model_name, model_base_path=base_path,
                                           host="127.0.0.1", grpc_port=0, rest_port=0,
                                           poll_seconds=0))
        server.start()
        grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", model_name,
                                 timeout=limits.load_timeout_s)
        status = grpc_client.model_status()
        load_seconds = time.monotonic() - started
        available = [v for v, state, _ in status if state == "AVAILABLE"]
        if not available:
            errors = "; ".join(f"version {v} {state}: {message}" for v, state, message in status)
            failures.append(f"the candidate did not load in the server: {errors or 'no version'}")
            return CanaryReport(False, failures, {}, load_seconds, len(records), limits.to_dict())
        # `__saved_model_init_op` and the like are not callable signatures
        signature_map = {k: v for k, v in grpc_client.signature_defs().signature_def.items()
                         if not k.startswith("__")}
        if not signature_map:
            failures.append("the candidate has no signatures")
        answers: dict[str, dict[str, np.ndarray]] = {}
        for name in sorted(signature_map):
            result = results[name] = SignatureResult(name)
            try:
                inputs = build_signature_inputs(list(signature_map[name].inputs), records)
            except ValueError as e:
                failures.append(f"{name}: {e}")
                continue
            try:
                answer = grpc_client.predict(name, inputs)
            except ClientError as e:
                failures.append(f"{name}: gRPC Predict failed: {e.code}: {e.message[:300]}")
                continue
            result.requests += 1
            problems = check_outputs(name, answer.outputs, len(records))
            failures += problems
            if not problems:
                answers[name] = answer.outputs
            for i in range(limits.requests_per_signature):
                row = {k: v[i % len(records):i % len(records) + 1] for k, v in inputs.items()}
                t0 = time.perf_counter()
                try:
                    grpc_client.predict(name, row)
                except ClientError as e:
                    failures.append(f"{name}: single-row request {i} failed: {e.code}: "
                                    f"{e.message[:300]}")
                    break
                result.latencies_ms.append(1000 * (time.perf_counter() - t0))
                result.requests += 1
            p99 = result.summary().get("p99_ms")
            if p99 is not None and p99 > limits.max_p99_ms:
                failures.append(f"{name}: p99 latency {p99:.1f} ms > limit "
                                f"{limits.max_p99_ms:.1f} ms")
        labels = [_text(r.get(contract.LABEL_KEY, b"")) for r in records]
        probabilities = answers.get(PROBABILITY_SIGNATURE, {})
        for name, outputs in answers.items():
            if contract.CLASSES_OUTPUT in outputs:
                top1 = [_text(c) for c in np.asarray(outputs[contract.CLASSES_OUTPUT])[:, 0]]
                results[name].accuracy = float(np.mean([p == t for p, t in zip(top1, labels)]))
            mode = SERVED_QUERY_MODE.get(name)
            if mode and mode in probabilities and contract.CLASS_IDS_OUTPUT in outputs:
                share = agreement(np.asarray(outputs[contract.CLASS_IDS_OUTPUT])[:, 0],
                                  probabilities[mode])
                results[name].agreement = share
                if share < limits.min_agreement:
                    failures.append(f"{name}: top-1 agrees with the evaluated {mode} arg max "
                                    f"on {share:.0%} of {len(records)} records (limit "
                                    f"{limits.min_agreement:.0%}): the serving path answers "
                                    f"differently from the one the Evaluator measured")
        if contract.IMAGE_SIGNATURE in answers and server.rest_port:
            failures += _check_rest(RestClient(f"127.0.0.1:{server.rest_port}", model_name,
                                               timeout=limits.load_timeout_s),
                                    signature_map[contract.IMAGE_SIGNATURE], records,
                                    answers[contract.IMAGE_SIGNATURE])
    except Exception as e:  # noqa: BLE001 - a canary that cannot run does not bless
        log.exception("canary error")
        failures.append(f"canary error: {type(e).__name__}: {str(e)[:300]}")
    finally:
        if grpc_client is not None:
            grpc_client.close()
        if server is not None:
            server.stop(grace=1.0)
        shutil.rmtree(staging, ignore_errors=True)
    return CanaryReport(not failures, failures,
                        {n: r.summary() for n, r in results.items()}, load_seconds,
                        len(records), limits.to_dict())


def _check_rest(rest_client, signature_def, records, grpc_outputs) -> list[str]:
    from sicot.serving.client import ClientError

    name = contract.IMAGE_SIGNATURE
    try:
        answer = rest_client.predict(name, build_signature_inputs(list(signature_def.inputs),
                                                                  records))
    except ClientError as e:
        return [f"{name}: REST predict failed: {e.code}: {e.message[:300]}"]
    rest_top1 = [_text(c) for c in np.asarray(answer.outputs.get(contract.CLASSES_OUTPUT))[:, 0]]
    grpc_top1 = [_text(c) for c in np.asarray(grpc_outputs[contract.CLASSES_OUTPUT])[:, 0]]
    if rest_top1 != grpc_top1:
        return [f"{name}: REST and gRPC answer different top-1 classes"]
    return []


def run_canary_for_pipeline(model_dir: str, records, limits: Mapping) -> dict:
    """The pipeline Canary component's entry point (called by dotted name): limits as a dict of
    `CanaryLimits` fields; returns `CanaryReport.to_dict()`. A bad limit is a failure."""
    try:
        checked = CanaryLimits(**dict(limits))
    except (TypeError, ValueError) as e:
        return CanaryReport(False, [f"bad canary limits {dict(limits)}: {e}"], {}).to_dict()
    return run_canary(model_dir, records, checked).to_dict()
