"""`sicot evaluate`: top-1 / top-5 accuracy of an exported model, overall and by class band.

The test split's records go through the importer's own checks (`convert_row`), so evaluation
sees exactly the records training would have accepted; rejected records are counted and
reported, not silently dropped. Bands are the model's own: the exported `transform_features`
signature (the Transform that trained the model, with its class counts and band edges) assigns
each class its band, as it does for the pipeline's Evaluator; nothing is recounted from the
raw data. A test class the model never saw is in `few` (the Transform's rule for an unseen
label) and can never be predicted. Training images per class come from the Transform's
`label_counts`, which the export copies to `assets.extra/`.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from sicot import console, contract
from sicot.errors import UserError
from sicot.paths import absolute
from sicot.trainer.export.saved_model import LABEL_COUNTS_FILE


def resolve_saved_model_dir(path: str) -> str:
    """A SavedModel folder, a TF Serving base folder (highest integer version), or a
    `sicot train` output folder (its `export/` base)."""
    import tensorflow as tf

    gfile = tf.io.gfile  # local folders and any remote scheme (gs://...)
    if gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    for base in (path, os.path.join(path, "export")):
        if not gfile.isdir(base):
            continue
        versions = sorted((int(d.rstrip("/")) for d in gfile.listdir(base)
                           if d.rstrip("/").isdigit()
                           and gfile.exists(os.path.join(base, d.rstrip("/"), "saved_model.pb"))),
                          reverse=True)
        if versions:
            return os.path.join(base, str(versions[0]))
    raise UserError(f"--model {path}: no saved_model.pb there, in an integer version folder, "
                    f"or under {os.path.join(path, 'export')}")


@dataclasses.dataclass
class Tally:
    count: int = 0
    top1: int = 0
    top5: int = 0

    def add(self, hit1: bool, hit5: bool):
        self.count += 1
        self.top1 += int(hit1)
        self.top5 += int(hit5)

    def as_dict(self):
        return {"count": self.count,
                "top1": self.top1 / self.count if self.count else None,
                "top5": self.top5 / self.count if self.count else None}


def _probe_example(label: bytes, image: bytes) -> bytes:
    import tensorflow as tf

    values = {contract.IMAGE_KEY: image, contract.LABEL_KEY: label}
    return tf.train.Example(features=tf.train.Features(feature={
        key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[values.get(key, b"")]))
        for key in contract.RAW_FEATURE_KEYS})).SerializeToString()


def model_class_bands(loaded, saved_model_dir: str, batch_size: int = 256) -> dict[str, str]:
    """{class name: band} as the model's Transform assigns them: one probe example per class
    of its label vocabulary through the `transform_features` signature (its `band_xf`)."""
    import tensorflow as tf

    if contract.TRANSFORM_SIGNATURE not in loaded.signatures:
        raise UserError(f"--model {saved_model_dir}: no signature {contract.TRANSFORM_SIGNATURE} "
                        f"(the Transform that gives each class its band)")
    with open(os.path.join(saved_model_dir, "assets", contract.LABEL_VOCAB_NAME), "rb") as f:
        names = [line.rstrip(b"\n") for line in f if line.strip()]
    transform = loaded.signatures[contract.TRANSFORM_SIGNATURE]
    image = tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()
    bands = {}
    for start in range(0, len(names), batch_size):
        batch = names[start:start + batch_size]
        examples = tf.constant([_probe_example(n, image) for n in batch])
        out = transform(**{contract.EXAMPLES_INPUT: examples})[contract.BAND_XF].numpy()
        bands.update({n.decode("utf-8"): b.decode("utf-8")
                      for n, b in zip(batch, out.reshape(-1))})
    return bands


def model_class_counts(saved_model_dir: str) -> dict[str, int] | None:
    """Training images per class from the Transform's `label_counts` exported with the model;
    None for a model exported without them."""
    path = os.path.join(saved_model_dir, LABEL_COUNTS_FILE)
    if not os.path.isfile(path):
        return None
    counts = {}
    with open(path, "rb") as f:
        for line in f:
            count, _, name = line.rstrip(b"\n").partition(b" ")
            if name:
                counts[name.decode("utf-8")] = int(float(count))
    return counts


def read_split(data_dir: str, split: str = "test"):
    """(records [{image, title, tags, label, record_id}], quarantine entries) of a split."""
    import tensorflow as tf

    from sicot.data.importer import ImportConfig, convert_row
    from sicot.data.manifest import find_split_files, read_manifest

    manifests = find_split_files(data_dir)
    if split not in manifests:
        raise UserError(f"--data {data_dir}: no {split} manifest")
    records, rejected = [], []
    for row in read_manifest(manifests[split]):
        example, entry = convert_row(row, data_dir, ImportConfig())
        if example is None:
            rejected.append(entry)
            continue
        feats = tf.train.Example.FromString(example).features.feature
        records.append({k: feats[k].bytes_list.value[0] for k in contract.RAW_FEATURE_KEYS})
    return records, rejected


def evaluate_saved_model(model_dir: str, data_dir: str, image_only: bool = False,
                         batch_size: int = 64, split: str = contract.TEST_SPLIT,
                         return_predictions: bool = False):
    """Runs the split through the serving signatures; returns the report dict (and, with
    `return_predictions`, the records and their predicted top-k classes per mode)."""
    saved_model_dir = resolve_saved_model_dir(model_dir)
    records, rejected = read_split(data_dir, split)
    if not records:
        raise UserError(f"--data {data_dir}: the {split} split has no usable records "
                        f"({len(rejected)} rejected)")
    fields, predictions = evaluate_records(saved_model_dir, records, image_only=image_only,
                                           batch_size=batch_size)
    report = {"saved_model": saved_model_dir, "data": absolute(data_dir), "split": split,
              "bands_from": "the model's Transform (transform_features)",
              "records": fields.pop("records"),
              "rejected_records": len(rejected),
              "rejected_reasons": dict(collections.Counter(
                  e["reason"].split(":", 1)[0] for e in rejected)),
              **fields}
    return (report, records, predictions) if return_predictions else report


def evaluate_records(saved_model_dir: str, records, image_only: bool = False,
                     batch_size: int = 64):
    """(report fields, {mode: [top-k class names per record]}) for raw records ({image, title,
    tags, label, record_id} bytes); bands and training counts come from the model."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the TFT graph uses)

    loaded = tf.saved_model.load(saved_model_dir)
    class_bands = model_class_bands(loaded, saved_model_dir)
    train_counts = model_class_counts(saved_model_dir)
    modes = {mode: contract.QUERY_MODE_SIGNATURES[mode]
             for mode in contract.QUERY_MODES if mode == contract.IMAGE_ONLY or not image_only}
    missing = [s for s in modes.values() if s not in loaded.signatures]
    if missing:
        raise UserError(f"--model {saved_model_dir}: no signature {missing}")

    results, per_class, predictions = {}, {}, {}
    # One row per record: its class, band and each mode's top-1 answer (`sicot demo` picks its
    # queries from these).
    examples = [{"record_id": r[contract.RECORD_ID_KEY].decode("utf-8"),
                 "label": r[contract.LABEL_KEY].decode("utf-8"),
                 "band": class_bands.get(r[contract.LABEL_KEY].decode("utf-8"), contract.FEW)}
                for r in records]
    for mode, signature_name in modes.items():
        signature = loaded.signatures[signature_name]
        tallies = collections.defaultdict(Tally)
        class_tallies = collections.defaultdict(Tally)
        predictions[mode] = []
        for start in console.progress(range(0, len(records), batch_size), unit="batch",
                                      desc=f"sicot evaluate: {mode}"):
            batch = records[start:start + batch_size]
            keys = contract.TEXT_KEYS if mode == contract.IMAGE_TEXT else ()
            inputs = {k: tf.constant([r[k] for r in batch]) for k in (contract.IMAGE_KEY, *keys)}
            classes = signature(**inputs)[contract.CLASSES_OUTPUT].numpy()
            for row, record, predicted in zip(examples[start:], batch, classes):
                row[mode] = predicted[0].decode("utf-8")
                label = record[contract.LABEL_KEY]
                hit1 = bool(predicted[0] == label)
                hit5 = bool(np.any(predicted[:5] == label))
                # A label the model never saw: `few`, as the Transform assigns it.
                band = class_bands.get(label.decode("utf-8"), contract.FEW)
                tallies[contract.OVERALL].add(hit1, hit5)
                tallies[band].add(hit1, hit5)
                class_tallies[label.decode("utf-8")].add(hit1, hit5)
                predictions[mode].append([c.decode("utf-8") for c in predicted])
        results[mode] = {name: tallies[name].as_dict()
                         for name in (contract.OVERALL, *contract.BANDS)}
        per_class[mode] = {
            name: dict(t.as_dict(), band=class_bands.get(name, contract.FEW),
                       train_count=None if train_counts is None else train_counts.get(name, 0))
            for name, t in sorted(class_tallies.items())}

    band_classes = collections.Counter(class_bands.values())
    return ({"records": len(records),
             "train_classes_per_band": {b: band_classes.get(b, 0) for b in contract.BANDS},
             "results": results, "per_class": per_class, "examples": examples}, predictions)


def format_table(report: dict) -> str:
    lines = [f"{'mode':<11} {'band':<8} {'n':>6} {'top-1':>7} {'top-5':>7}"]
    for mode, bands in report["results"].items():
        for band, r in bands.items():
            if r["count"]:
                lines.append(f"{mode:<11} {band:<8} {r['count']:>6} {100 * r['top1']:>6.2f}% "
                             f"{100 * r['top5']:>6.2f}%")
            else:
                lines.append(f"{mode:<11} {band:<8} {0:>6} {'-':>7} {'-':>7}")
    if report["rejected_records"]:
        lines.append(f"{report['rejected_records']} {report['split']} records rejected "
                     f"({report['rejected_reasons']}), not counted")
    return "\n".join(lines)


def write_json(report: dict, path: str) -> None:
    import tensorflow as tf

    path = absolute(path)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
