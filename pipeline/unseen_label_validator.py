"""`UnseenLabelValidator`: find labels in eval/test that the train split never has.

The curated schema leaves label values open (a closed list of classes would have to be
rewritten for every catalogue), so ExampleValidator cannot see a new class in eval or test.
TFDV statistics cannot be used for this at our scale either: their string statistics keep
the 20 most frequent values and a rank histogram of at most 1,000 values per feature
(`tfdv.StatsOptions` defaults), and SchemaGen gives `label` a domain only when the train split
has at most 100 distinct values (`max_string_domain_size=100`). So with more than 100
classes even `--schema infer` does not catch a new label (checked with 1,200 classes: the
inferred `label` has no domain), and with more than 1,000 a rare new label need not be in
the statistics at all.

So this component reads the `label` of every example once (one Beam pass over train and each
checked split, the same read cost as StatisticsGen; no full label set is held in one place:
the train labels are made distinct and joined to the split's labels by key), and writes, per
checked split:
  * `Split-<split>/SchemaDiff.pb`: a tensorflow_metadata `Anomalies` proto, empty or with one
    `label` anomaly naming how many examples carry how many unseen labels and the commonest
    few. `ValidationGate` reads it like ExampleValidator's output and stops the run.
  * `Split-<split>/unseen_labels.json`: the same figures for people and scripts.

`allowed_splits` (comma-separated, e.g. "test") lists splits where labels unseen in training
are expected (open-set evaluation): they are not read at all.
"""

import json
import os
from typing import Dict, Iterable, List, Tuple

import apache_beam as beam
from tfx import v1 as tfx

from sicot import contract

TRAIN_SPLIT = "train"
ANOMALIES_FILE = "SchemaDiff.pb"  # the name ExampleValidator and ValidationGate use
REPORT_FILE = "unseen_labels.json"
MAX_NAMED_LABELS = 5


def label_values(serialized_example: bytes) -> List[bytes]:
    """The `label` values of one serialized tf.Example ([] when it has none)."""
    from tensorflow.core.example import example_pb2

    feature_map = example_pb2.Example.FromString(serialized_example).features.feature
    if contract.LABEL_KEY not in feature_map:
        return []
    return list(feature_map[contract.LABEL_KEY].bytes_list.value)


class SummarizeUnseenLabels(beam.CombineFn):
    """(label, examples) pairs -> {unseen_labels, unseen_examples, commonest: [[label, n]]}."""

    def __init__(self, max_named: int = MAX_NAMED_LABELS):
        self.max_named = max_named

    def create_accumulator(self):
        return 0, 0, []

    def _top(self, pairs: Iterable[Tuple[int, str]]):
        # Commonest first; ties by label so that the message is the same run after run.
        return sorted(pairs, key=lambda p: (-p[0], p[1]))[:self.max_named]

    def add_input(self, accumulator, label_and_count):
        labels, examples, top = accumulator
        label, count = label_and_count
        text = label.decode("utf-8", "backslashreplace")
        return labels + 1, examples + count, self._top(top + [(count, text)])

    def merge_accumulators(self, accumulators):
        labels = examples = 0
        top = []
        for n_labels, n_examples, part in accumulators:
            labels, examples, top = labels + n_labels, examples + n_examples, top + part
        return labels, examples, self._top(top)

    def extract_output(self, accumulator):
        labels, examples, top = accumulator
        return {"unseen_labels": labels, "unseen_examples": examples,
                "commonest": [[label, count] for count, label in top]}


def _not_in_train(joined):
    label, groups = joined
    if list(groups["train"]):
        return []
    return [(label, sum(groups["split"]))]


class FindUnseenLabels(beam.PTransform):
    """{split: PCollection of serialized tf.Example} -> {checked split: PCollection of one
    report dict (`SummarizeUnseenLabels` output plus `examples`, the split's example count)}."""

    def __init__(self, checked_splits: Iterable[str], max_named: int = MAX_NAMED_LABELS):
        super().__init__()
        self.checked_splits = list(checked_splits)
        self.max_named = max_named

    def expand(self, examples_by_split: Dict[str, beam.PCollection]):
        train_labels = (examples_by_split[TRAIN_SPLIT]
                        | "TrainLabels" >> beam.FlatMap(label_values)
                        | "DistinctTrainLabels" >> beam.Distinct()
                        | "KeyTrainLabels" >> beam.Map(lambda label: (label, True)))
        reports = {}
        for split in self.checked_splits:
            examples = examples_by_split[split]
            n_examples = examples | f"Count[{split}]" >> beam.combiners.Count.Globally()
            per_label = (examples
                         | f"Labels[{split}]" >> beam.FlatMap(label_values)
                         | f"PerLabel[{split}]" >> beam.combiners.Count.PerElement())
            reports[split] = (
                {"train": train_labels, "split": per_label}
                | f"JoinTrain[{split}]" >> beam.CoGroupByKey()
                | f"NotInTrain[{split}]" >> beam.FlatMap(_not_in_train)
                | f"Summarize[{split}]" >> beam.CombineGlobally(
                    SummarizeUnseenLabels(self.max_named))
                | f"AddCount[{split}]" >> beam.Map(
                    lambda report, n: dict(report, examples=n),
                    n=beam.pvalue.AsSingleton(n_examples)))
        return reports


def unseen_label_anomalies(split: str, report: Dict):
    """The `Anomalies` proto for one split's report: empty when every label was in train."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    anomalies = anomalies_pb2.Anomalies()
    if not report["unseen_examples"]:
        return anomalies
    named = ", ".join(f"'{label}' ({count})" for label, count in report["commonest"])
    more = report["unseen_labels"] - len(report["commonest"])
    description = (
        f"{report['unseen_examples']} of {report['examples']} examples have "
        f"{report['unseen_labels']} label value{'s' if report['unseen_labels'] != 1 else ''} "
        f"that the train split never has: {named}" + (f" and {more} more" if more > 0 else "")
        + f"; if they are expected, allow them with --allow-unseen-labels {split}")
    info = anomalies.anomaly_info[contract.LABEL_KEY]
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    info.short_description = "Labels not in the train split"
    info.description = description
    info.path.step.append(contract.LABEL_KEY)
    reason = info.reason.add()
    reason.type = anomalies_pb2.AnomalyInfo.ENUM_TYPE_UNEXPECTED_STRING_VALUES
    reason.short_description = info.short_description
    reason.description = description
    return anomalies


@tfx.dsl.components.component(use_beam=True)
def UnseenLabelValidator(  # noqa: N802 - TFX component names are classes
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    anomalies: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    allowed_splits: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Writes one Anomalies proto per checked split (see the module docstring)."""
    import tensorflow as tf
    from tfx.types import artifact_utils

    splits = artifact_utils.decode_split_names(examples.split_names)
    if TRAIN_SPLIT not in splits:
        raise ValueError(f"the examples have no {TRAIN_SPLIT!r} split (splits: {splits})")
    allowed = {s.strip() for s in allowed_splits.split(",") if s.strip()}
    checked = [s for s in splits if s != TRAIN_SPLIT and s not in allowed]
    anomalies.split_names = artifact_utils.encode_split_names(checked)
    if not checked:
        return

    def split_uri(artifact, split):
        return artifact_utils.get_split_uri([artifact], split)

    with beam_pipeline as p:
        examples_by_split = {
            split: p | f"Read[{split}]" >> beam.io.ReadFromTFRecord(
                os.path.join(split_uri(examples, split), "*"))
            for split in [TRAIN_SPLIT] + checked}
        reports = examples_by_split | "FindUnseenLabels" >> FindUnseenLabels(checked)
        for split, report in reports.items():
            _ = (report
                 | f"Json[{split}]" >> beam.Map(json.dumps, sort_keys=True)
                 | f"Write[{split}]" >> beam.io.WriteToText(
                     os.path.join(split_uri(anomalies, split), REPORT_FILE),
                     shard_name_template=""))

    for split in checked:
        out_dir = split_uri(anomalies, split)
        with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_FILE)) as f:
            report = json.loads(f.read())
        with tf.io.gfile.GFile(os.path.join(out_dir, ANOMALIES_FILE), "wb") as f:
            f.write(unseen_label_anomalies(split, report).SerializeToString())
