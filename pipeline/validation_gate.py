"""`ValidationGate`: stop the run when ExampleValidator or UnseenLabelValidator found anomalies.

In TFX 1.16 ExampleValidator records anomalies (and a `blessed` custom property) but does
not fail, so Transform and Trainer would go on with bad data. The gate reads the anomalies
of every validated split, from ExampleValidator (schema) and from UnseenLabelValidator
(labels the train split never has), and raises with one line per anomaly (split, feature,
short description). Otherwise it passes the schema through unchanged: Transform takes its schema
from the gate, so Transform (and everything after it) cannot run before the gate passed.
"""

import os
from typing import Dict, List

from tfx import v1 as tfx

SCHEMA_FILE = "schema.pbtxt"
ANOMALIES_FILE = "SchemaDiff.pb"  # tfx.components.example_validator.executor.DEFAULT_FILE_NAME


class DataValidationError(RuntimeError):
    """The examples do not match the schema; the message names each anomaly."""


def describe_anomalies(anomalies_by_split: Dict[str, object]) -> List[str]:
    """One readable line per anomaly: `split 'test': feature 'label': <short description>`."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            description = info.short_description or info.description
            detail = info.description if info.description != description else ""
            lines.append(f"split '{split}': feature '{feature}': {description}"
                         + (f" ({detail})" if detail else ""))
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"split '{split}': dataset: {info.short_description or info.description}")
    return lines


def load_anomalies(anomalies_artifact) -> Dict[str, object]:
    """split -> tensorflow_metadata Anomalies proto of an ExampleAnomalies artifact."""
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from tfx.types import artifact_utils

    anomalies = {}
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        split_uri = artifact_utils.get_split_uri([anomalies_artifact], split)
        path = os.path.join(split_uri, ANOMALIES_FILE)
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies[split] = anomalies_pb2.Anomalies.FromString(f.read())
    return anomalies


@tfx.dsl.components.component
def ValidationGate(  # noqa: N802 - TFX component names are classes
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    label_anomalies: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ExampleAnomalies],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
) -> None:
    """Raises DataValidationError naming every anomaly; else copies the schema through."""
    import tensorflow as tf
    from tfx.utils import io_utils

    problems = (describe_anomalies(load_anomalies(anomalies))
                + describe_anomalies(load_anomalies(label_anomalies)))
    if problems:
        raise DataValidationError(
            f"data validation failed with {len(problems)} anomal"
            f"{'y' if len(problems) == 1 else 'ies'}; stopping before Transform and Trainer:\n  "
            + "\n  ".join(problems)
            + f"\n(anomalies: {anomalies.uri}; label anomalies: {label_anomalies.uri}; "
              f"schema: {schema.uri})")
    source = io_utils.get_only_uri_in_dir(schema.uri)
    tf.io.gfile.makedirs(validated_schema.uri)
    tf.io.gfile.copy(source, os.path.join(validated_schema.uri, SCHEMA_FILE), overwrite=True)
