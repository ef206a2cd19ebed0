"""Batch scoring of a catalogue with an exported SICoT model, on Apache Beam.

`sicot score --model MODEL --data DIR --out FILE` runs the transform `ScoreExamples`: raw
tf.Examples (the importer's format: image, title,
tags, label, record_id) in batches through the model's `serving_default` (image only) and
`serving_image_text` (image + title/tags) signatures, loaded once per worker. Output files
(FILE and its siblings, named by `ScoringFiles`):

  FILE                       one JSON line per scored record: record_id, split, label,
                             image_only {classes, scores} (top-k), image_text {...},
                             embedding (with `embedding=True`)
  FILE.quarantine.jsonl      one JSON line per record that could not be scored:
                             {split, source, record, reason}: a manifest row the importer
                             rejects (same rules and reason codes as `sicot import`), or a
                             record the model fails on (`inference_error: ...`)
  FILE.suspects.jsonl        suspected mislabelled listings: the image-only top-1 is another
                             class than the listing's label with score >= suspect_min_score;
                             most confident first
  FILE.duplicates.jsonl      near-duplicate listings across SKUs: pairs of records with
                             different labels whose visual embeddings have cosine similarity
                             >= duplicate_min_similarity; most similar first
  FILE.summary.json          counts per split (records = scored + quarantined, checked),
                             suspects, duplicate pairs, settings

In the pipeline the inference itself is TFX's BulkInferrer (it runs this export's
`serving_examples` signature on TFX 1.16: checked, docs/pipeline.md "Batch scoring"), and
`run_beam_log_conversion` turns its PredictionLogs into the same files. `sicot score` reads
a dataset folder directly (manifests, the importer's quarantine rules) and also scores image +
title/tags, which BulkInferrer's single predict signature per run cannot.

Scale: scoring is a Beam pipeline (any runner). Suspects are a streaming filter. Duplicates
are an exact all-pairs search over L2-normalised embeddings in blocks of 4,096 rows (numpy),
O(n^2 d): fine to a few hundred thousand records on one machine; beyond that use an
approximate index (issue 13's `sicot index`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from sicot import contract

IMAGE_SIGNATURE = contract.IMAGE_SIGNATURE
IMAGE_TEXT_SIGNATURE = contract.IMAGE_TEXT_SIGNATURE
QUARANTINE_TAG = "quarantine"
EMBEDDING_TAG = "embedding"


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """Settings of a batch scoring run.

    Attributes:
      with_text: also score image + title/tags (serving_image_text).
      embedding: put the visual embedding in each prediction record.
      batch_size: records per model call.
      suspect_min_score: image-only top-1 score from which a disagreement with the label is
        reported as a suspected mislabelled listing.
      duplicate_min_similarity: cosine similarity of visual embeddings from which two
        records of different labels are reported as near-duplicate listings.
      max_duplicate_pairs: the report keeps at most this many pairs (most similar first).
    """

    with_text: bool = True
    embedding: bool = False
    batch_size: int = 64
    suspect_min_score: float = 0.5
    duplicate_min_similarity: float = 0.98
    max_duplicate_pairs: int = 10_000

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("suspect_min_score", "duplicate_min_similarity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")


@dataclasses.dataclass(frozen=True)
class ScoringFiles:
    predictions: str

    @property
    def quarantine(self) -> str:
        return self.predictions + ".quarantine.jsonl"

    @property
    def suspects(self) -> str:
        return self.predictions + ".suspects.jsonl"

    @property
    def duplicates(self) -> str:
        return self.predictions + ".duplicates.jsonl"

    @property
    def summary(self) -> str:
        return self.predictions + ".summary.json"

    @property
    def input_counts(self) -> str:  # intermediate: [split, records] lines (example input)
        return self.predictions + ".input_counts.jsonl"

    @property
    def embeddings(self) -> str:  # intermediate: (record_id, label, embedding) for duplicates
        return self.predictions + ".embeddings.tfrecord.gz"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def _parse(serialized: bytes) -> Dict[str, bytes]:
    from tensorflow.core.example import example_pb2

    feature_map = example_pb2.Example.FromString(serialized).features.feature
    return {k: feature_map[k].bytes_list.value[0] for k in contract.RAW_FEATURE_KEYS
            if k in feature_map and feature_map[k].bytes_list.value}


def _quarantine_line(split: str, source: str, record: str, reason: str) -> str:
    return json.dumps({"split": split, "source": source, "record": record, "reason": reason},
                      ensure_ascii=False, sort_keys=True)


class ScoreBatch:
    """Callable: [(split, serialized raw tf.Example)] -> prediction dicts and quarantine
    entries. Loads the SavedModel once (Beam calls it from a DoFn's setup)."""

    def __init__(self, model_dir: str, config: ScoringConfig):
        import tensorflow as tf

        try:
            import tensorflow_text  # noqa: F401  (ops of the Transform graph)
        except ImportError:
            pass
        self.config = config
        self._model = tf.saved_model.load(model_dir)
        signatures = self._model.signatures
        if IMAGE_SIGNATURE not in signatures:
            raise ValueError(f"{model_dir}: no {IMAGE_SIGNATURE} signature "
                             f"(has {sorted(signatures)})")
        self._image = signatures[IMAGE_SIGNATURE]
        self._image_text = signatures.get(IMAGE_TEXT_SIGNATURE) if config.with_text else None
        if config.with_text and self._image_text is None:
            raise ValueError(f"{model_dir}: no {IMAGE_TEXT_SIGNATURE} signature; score with "
                             f"image only")

    def _call(self, rows: List[Dict[str, bytes]]):
        import tensorflow as tf

        images = tf.constant([r[contract.IMAGE_KEY] for r in rows])
        image_only = {k: v.numpy() for k, v in self._image(image=images).items()}
        image_text = None
        if self._image_text is not None:
            image_text = {k: v.numpy() for k, v in self._image_text(
                image=images,
                title=tf.constant([r.get(contract.TITLE_KEY, b"") for r in rows]),
                tags=tf.constant([r.get(contract.TAGS_KEY, b"") for r in rows])).items()}
        return image_only, image_text

    def _records(self, split, rows, image_only, image_text):
        for i, row in enumerate(rows):
            record = {"record_id": _text(row.get(contract.RECORD_ID_KEY, b"")), "split": split,
                      "label": _text(row.get(contract.LABEL_KEY, b"")),
                      "image_only": {"classes": [_text(c) for c in image_only["classes"][i]],
                                     "scores": [round(float(s), 6)
                                                for s in image_only["scores"][i]]}}
            if image_text is not None:
                record["image_text"] = {
                    "classes": [_text(c) for c in image_text["classes"][i]],
                    "scores": [round(float(s), 6) for s in image_text["scores"][i]]}
            embedding = np.asarray(image_only["embedding"][i], dtype=np.float32)
            yield record, embedding

    def __call__(self, batch: Sequence[tuple]):
        """Yields ("prediction", record dict, embedding) or ("quarantine", json line)."""
        parsed = []
        for split, serialized in batch:
            try:
                row = _parse(serialized)
                if contract.IMAGE_KEY not in row:
                    raise ValueError("no image")
                parsed.append((split, row, serialized))
            except Exception as e:  # noqa: BLE001 - a record must never be lost
                yield ("quarantine", _quarantine_line(split, "?", repr(serialized[:200]),
                                                      f"bad_example: {e}"))
        groups: Dict[str, list] = {}
        for split, row, serialized in parsed:
            groups.setdefault(split, []).append(row)
        for split, rows in groups.items():
            try:
                results = [(rows, *self._call(rows))]
            except Exception:  # noqa: BLE001 - find the record(s) the model fails on
                results = []
                for row in rows:
                    try:
                        results.append(([row], *self._call([row])))
                    except Exception as e:  # noqa: BLE001
                        message = " ".join(str(e).split())[:300]
                        yield ("quarantine", _quarantine_line(
                            split, _text(row.get(contract.RECORD_ID_KEY, b"?")),
                            _text(row.get(contract.RECORD_ID_KEY, b"")),
                            f"inference_error: {type(e).__name__}: {message}"))
            for part, image_only, image_text in results:
                for record, embedding in self._records(split, part, image_only, image_text):
                    yield ("prediction", record, embedding)


def score_examples_transform(model_dir: str, config: ScoringConfig):
    """A PTransform: PCollection[(split, serialized raw tf.Example)] -> tagged outputs
    `predictions` (JSON lines), `quarantine` (JSON lines), `embedding` (serialized
    tf.Example of record_id, label, split, embedding)."""
    import apache_beam as beam

    class _ScoreDoFn(beam.DoFn):
        def setup(self):
            self._score = ScoreBatch(model_dir, config)

        def process(self, batch):
            for item in self._score(batch):
                if item[0] == "quarantine":
                    yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, item[1])
                    continue
                _, record, embedding = item
                yield beam.pvalue.TaggedOutput(EMBEDDING_TAG, _embedding_example(record,
                                                                                 embedding))
                if config.embedding:
                    record = dict(record, embedding=[round(float(v), 6) for v in embedding])
                yield json.dumps(record, ensure_ascii=False)

    @beam.ptransform_fn
    def ScoreExamples(examples):  # noqa: N802 - Beam transform naming
        return (examples
                | "Batch" >> beam.BatchElements(min_batch_size=1,
                                                max_batch_size=config.batch_size)
                | "Score" >> beam.ParDo(_ScoreDoFn()).with_outputs(
                    QUARANTINE_TAG, EMBEDDING_TAG, main="predictions"))

    return ScoreExamples()


def _embedding_example(record: dict, embedding: np.ndarray) -> bytes:
    import tensorflow as tf

    def b(value: str):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    return tf.train.Example(features=tf.train.Features(feature={
        "record_id": b(record["record_id"]), "label": b(record["label"]),
        "split": b(record["split"]),
        "embedding": tf.train.Feature(float_list=tf.train.FloatList(value=embedding.tolist())),
    })).SerializeToString()


def _convert_rows(data_dir: str, import_config):
    """DoFn: (split, ManifestRow) -> (split, serialized raw tf.Example) or a quarantine line."""
    import apache_beam as beam

    class _Convert(beam.DoFn):
        def process(self, item):
            from sicot.data.importer import convert_row

            split, row = item
            try:
                example, bad = convert_row(row, data_dir, import_config)
            except Exception as e:  # noqa: BLE001 - a row must never be lost, even on a bug
                example, bad = None, {"source": row.source, "record": row.raw,
                                      "reason": f"internal_error: {type(e).__name__}: {e}"}
            if example is not None:
                yield split, example
            else:
                yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, _quarantine_line(
                    split, bad["source"], bad["record"], bad["reason"]))

    return _Convert()


def _read_rows(item):
    from sicot.data.manifest import read_manifest

    split, path = item
    for row in read_manifest(path):
        yield split, row


def _write_single(pcoll, path: str, label: str):
    import apache_beam as beam

    return pcoll | label >> beam.io.WriteToText(path, shard_name_template="", num_shards=1)


def run_beam_scoring(model_dir: str, files: ScoringFiles, config: ScoringConfig, *,
                     manifests: Optional[Dict[str, str]] = None, data_dir: Optional[str] = None,
                     import_config=None, example_files: Optional[Dict[str, List[str]]] = None,
                     beam_pipeline_args: Sequence[str] = (), pipeline=None) -> None:
    """Runs the Beam pipeline: either manifests (split -> manifest path, rows converted with
    the importer's rules) or example_files (split -> GZIP TFRecords of raw tf.Examples; their
    records are counted per split into `files.input_counts`). `pipeline`: a Beam pipeline to
    run in (a TFX component's); default one built from `beam_pipeline_args`."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    if not files.predictions.startswith("gs://"):
        os.makedirs(os.path.dirname(os.path.abspath(files.predictions)) or ".", exist_ok=True)
    if pipeline is None:
        pipeline = beam.Pipeline(options=PipelineOptions(
            list(beam_pipeline_args) or
            ["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
    with pipeline as p:
        quarantines = []
        if manifests is not None:
            converted = (p
                         | "Manifests" >> beam.Create(sorted(manifests.items()))
                         | "ReadRows" >> beam.FlatMap(_read_rows)
                         | "Spread" >> beam.Reshuffle()
                         | "Convert" >> beam.ParDo(_convert_rows(data_dir, import_config))
                         .with_outputs(QUARANTINE_TAG, main="examples"))
            examples = converted.examples
            quarantines.append(converted[QUARANTINE_TAG])
        else:
            per_split = []
            for split, paths in sorted((example_files or {}).items()):
                per_split.append(
                    p | f"Read-{split}" >> beam.io.ReadFromTFRecord(
                        paths[0] if len(paths) == 1 else _common_pattern(paths),
                        compression_type=beam.io.filesystem.CompressionTypes.GZIP)
                    | f"Tag-{split}" >> beam.Map(lambda e, s=split: (s, e)))
            examples = per_split | "AllSplits" >> beam.Flatten()
            (examples
             | "SplitOf" >> beam.Map(lambda item: item[0])
             | "CountInput" >> beam.combiners.Count.PerElement()
             | "CountLine" >> beam.Map(json.dumps)
             | "WriteCounts" >> beam.io.WriteToText(files.input_counts, shard_name_template="",
                                                    num_shards=1))
        scored = examples | "ScoreExamples" >> score_examples_transform(model_dir, config)
        quarantines.append(scored[QUARANTINE_TAG])
        _write_single(scored.predictions, files.predictions, "WritePredictions")
        _write_single(quarantines | "AllQuarantine" >> beam.Flatten(), files.quarantine,
                      "WriteQuarantine")
        (scored[EMBEDDING_TAG]
         | "WriteEmbeddings" >> beam.io.WriteToTFRecord(
             files.embeddings, shard_name_template="", num_shards=1,
             compression_type=beam.io.filesystem.CompressionTypes.GZIP))


def _common_pattern(paths: List[str]) -> str:
    folder = os.path.dirname(paths[0])
    if any(os.path.dirname(p) != folder for p in paths):
        raise ValueError(f"example files of one split must share a folder: {paths[:3]}")
    return os.path.join(folder, "*")


def prediction_from_log(serialized_log: bytes):
    """A BulkInferrer PredictionLog (predict_log of a signature taking serialized examples,
    one example per log) -> (prediction record dict, embedding or None)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog.FromString(serialized_log)
    request, response = log.predict_log.request, log.predict_log.response
    examples = tf.make_ndarray(next(iter(request.inputs.values())))
    row = _parse(examples.reshape(-1)[0])
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    record_id = _text(row.get(contract.RECORD_ID_KEY, b""))
    record = {"record_id": record_id,
              "split": record_id.split(".", 1)[0] if ".jsonl:" in record_id or
              ".csv:" in record_id else "",
              "label": _text(row.get(contract.LABEL_KEY, b"")),
              "image_only": {"classes": [_text(c) for c in outputs["classes"].reshape(-1)],
                             "scores": [round(float(s), 6)
                                        for s in outputs["scores"].reshape(-1)]}}
    embedding = outputs.get("embedding")
    return record, None if embedding is None else embedding.reshape(-1).astype(np.float32)


def run_beam_log_conversion(log_files: List[str], files: ScoringFiles, config: ScoringConfig,
                            pipeline) -> None:
    """BulkInferrer's prediction logs -> the same files as `run_beam_scoring` writes."""
    import apache_beam as beam

    def convert(serialized_log):
        record, embedding = prediction_from_log(serialized_log)
        if embedding is not None:
            yield beam.pvalue.TaggedOutput(EMBEDDING_TAG, _embedding_example(record, embedding))
            if config.embedding:
                record = dict(record, embedding=[round(float(v), 6) for v in embedding])
        yield json.dumps(record, ensure_ascii=False)

    with pipeline as p:
        converted = (p
                     | "Logs" >> beam.Create(log_files)
                     | "ReadLogs" >> beam.io.ReadAllFromTFRecord(
                         compression_type=beam.io.filesystem.CompressionTypes.GZIP)
                     | "Convert" >> beam.FlatMap(convert).with_outputs(EMBEDDING_TAG,
                                                                       main="predictions"))
        _write_single(converted.predictions, files.predictions, "WritePredictions")
        _write_single(p | "NoQuarantine" >> beam.Create([]), files.quarantine,
                      "WriteQuarantine")
        (converted[EMBEDDING_TAG]
         | "WriteEmbeddings" >> beam.io.WriteToTFRecord(
             files.embeddings, shard_name_template="", num_shards=1,
             compression_type=beam.io.filesystem.CompressionTypes.GZIP))


def _read_jsonl(path: str) -> Iterable[dict]:
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path, "r") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def find_suspects(predictions_path: str, min_score: float) -> List[dict]:
    """Records whose image-only top-1 is not their label with score >= min_score."""
    suspects = []
    for record in _read_jsonl(predictions_path):
        top = record["image_only"]
        if top["classes"] and top["classes"][0] != record["label"] and \
                top["scores"][0] >= min_score:
            classes = top["classes"]
            suspects.append({
                "record_id": record["record_id"], "split": record["split"],
                "label": record["label"], "predicted": classes[0], "score": top["scores"][0],
                "label_rank": classes.index(record["label"]) + 1
                if record["label"] in classes else None,
                "label_score": top["scores"][classes.index(record["label"])]
                if record["label"] in classes else None})
    suspects.sort(key=lambda s: (-s["score"], s["record_id"]))
    return suspects


def read_embeddings(path: str):
    """(record ids, labels, splits, [n, d] L2-normalised float32) from the embeddings file."""
    import tensorflow as tf

    ids, labels, splits, vectors = [], [], [], []
    if tf.io.gfile.exists(path):
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            ids.append(f["record_id"].bytes_list.value[0].decode())
            labels.append(f["label"].bytes_list.value[0].decode())
            splits.append(f["split"].bytes_list.value[0].decode())
            vectors.append(np.asarray(f["embedding"].float_list.value, np.float32))
    matrix = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
    if len(matrix):
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return ids, labels, splits, matrix


def find_duplicates(ids: Sequence[str], labels: Sequence[str], matrix: np.ndarray,
                    min_similarity: float, max_pairs: int, block: int = 4096) -> List[dict]:
    """Pairs (i < j) with different labels and cosine similarity >= min_similarity."""
    labels_arr = np.asarray(labels, dtype=object)
    pairs = []
    n = len(ids)
    for start in range(0, n, block):
        sims = matrix[start:start + block] @ matrix.T  # [b, n]
        rows, cols = np.nonzero(sims >= min_similarity)
        rows_abs = rows + start
        keep = (cols > rows_abs) & (labels_arr[rows_abs] != labels_arr[cols])
        for r, c in zip(rows_abs[keep], cols[keep]):
            pairs.append((float(sims[r - start, c]), int(r), int(c)))
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [{"similarity": round(s, 6), "a": {"record_id": ids[i], "label": labels[i]},
             "b": {"record_id": ids[j], "label": labels[j]}} for s, i, j in pairs[:max_pairs]]


def _write_jsonl(path: str, rows: Iterable[dict]) -> int:
    import tensorflow as tf

    count = 0
    with tf.io.gfile.GFile(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def count_by_split(path: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for record in _read_jsonl(path):
        counts[record["split"]] = counts.get(record["split"], 0) + 1
    return counts


def finish_reports(files: ScoringFiles, config: ScoringConfig,
                   records_per_split: Optional[Dict[str, int]], extra: dict) -> dict:
    """Suspects, duplicates and the summary from the Beam outputs; checks that every record
    was scored or quarantined when the input counts are known."""
    import tensorflow as tf

    if records_per_split is None and tf.io.gfile.exists(files.input_counts):
        with tf.io.gfile.GFile(files.input_counts) as f:
            records_per_split = dict(json.loads(line) for line in f if line.strip())
        tf.io.gfile.remove(files.input_counts)
    scored = count_by_split(files.predictions)
    quarantined = count_by_split(files.quarantine)
    reasons: Dict[str, Dict[str, int]] = {}
    for entry in _read_jsonl(files.quarantine):
        code = entry["reason"].split(":", 1)[0]
        reasons.setdefault(entry["split"], {})[code] = \
            reasons.setdefault(entry["split"], {}).get(code, 0) + 1
    suspects = find_suspects(files.predictions, config.suspect_min_score)
    _write_jsonl(files.suspects, suspects)
    ids, labels, _, matrix = read_embeddings(files.embeddings)
    duplicates = find_duplicates(ids, labels, matrix, config.duplicate_min_similarity,
                                 config.max_duplicate_pairs) if len(ids) else []
    _write_jsonl(files.duplicates, duplicates)
    if tf.io.gfile.exists(files.embeddings):
        tf.io.gfile.remove(files.embeddings)
    splits = sorted(set(scored) | set(quarantined) | set(records_per_split or {}))
    per_split = {}
    for split in splits:
        row = {"scored": scored.get(split, 0), "quarantined": quarantined.get(split, 0),
               "reasons": reasons.get(split, {})}
        if records_per_split is not None:
            row["records"] = records_per_split.get(split, 0)
        per_split[split] = row
    summary = dict(extra, config=dataclasses.asdict(config), splits=per_split,
                   scored=sum(scored.values()), quarantined=sum(quarantined.values()),
                   suspects=len(suspects), duplicate_pairs=len(duplicates),
                   files={"predictions": files.predictions, "quarantine": files.quarantine,
                          "suspects": files.suspects, "duplicates": files.duplicates})
    with tf.io.gfile.GFile(files.summary, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    if records_per_split is not None:
        lost = {s: r for s, r in per_split.items() if r["records"] != r["scored"] + r["quarantined"]}
        if lost:
            raise RuntimeError(f"batch scoring lost records (records != scored + quarantined): "
                               f"{lost}; see {files.summary}")
    return summary


def count_manifest_rows(manifests: Dict[str, str]) -> Dict[str, int]:
    from sicot.data.manifest import read_manifest

    return {split: sum(1 for _ in read_manifest(path)) for split, path in manifests.items()}


def score_dataset(model_dir: str, data_dir: str, out_path: str,
                  config: ScoringConfig = ScoringConfig(), splits: Optional[Sequence[str]] = None,
                  import_config=None, beam_pipeline_args: Sequence[str] = ()) -> dict:
    """`sicot score`: every record of the dataset's manifests scored or quarantined."""
    from sicot.data.importer import ImportConfig
    from sicot.data.manifest import find_split_files

    found = {s: str(p) for s, p in find_split_files(data_dir).items()}
    chosen = {s: p for s, p in found.items() if splits is None or s in splits}
    files = ScoringFiles(os.path.abspath(out_path))
    run_beam_scoring(model_dir, files, config, manifests=chosen,
                     data_dir=os.path.abspath(data_dir),
                     import_config=import_config or ImportConfig(),
                     beam_pipeline_args=beam_pipeline_args)
    return finish_reports(files, config, count_manifest_rows(chosen),
                          {"model": model_dir, "data": os.path.abspath(data_dir)})


def format_summary(summary: dict) -> str:
    lines = [f"{'split':<6} {'records':>8} {'scored':>8} {'quarantined':>11}"]
    for split, row in summary["splits"].items():
        lines.append(f"{split:<6} {row.get('records', ''):>8} {row['scored']:>8} "
                     f"{row['quarantined']:>11}"
                     + (f"  ({', '.join(f'{k} {v}' for k, v in row['reasons'].items())})"
                        if row["reasons"] else ""))
    files = summary["files"]
    lines.append(f"predictions: {files['predictions']}")
    lines.append(f"quarantine:  {files['quarantine']}")
    lines.append(f"suspected mislabelled listings: {summary['suspects']} -> {files['suspects']}")
    lines.append(f"near-duplicate pairs across SKUs: {summary['duplicate_pairs']} -> "
                 f"{files['duplicates']}")
    return "\n".join(lines)
