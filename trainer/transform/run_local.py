"""Runs `preprocessing_fn` with tf.Transform on Beam outside TFX.

The standalone `sicot train` and the tests use this to get exactly what the TFX Transform
component produces (a transform graph directory readable by `tft.TFTransformOutput`, and
transformed GZIP TFRecords of tf.Example per split) without a pipeline around it. The
vocabularies and class counts are analysed on the train split only, as in TFX.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from sicot import contract
from sicot.trainer.transform.preprocessing import TransformConfig

TRANSFORMED_DIR = "transformed"
TRANSFORM_GRAPH_DIR = "transform_graph"


@dataclasses.dataclass(frozen=True)
class TransformResult:
    transform_output_dir: str  # for tft.TFTransformOutput
    transformed_files: dict  # split -> file pattern of transformed GZIP TFRecords
    num_examples: dict  # split -> number of transformed examples


def raw_feature_spec() -> dict:
    """The raw tf.Example spec written by the importer: every feature is present, scalar bytes."""
    import tensorflow as tf

    return {key: tf.io.FixedLenFeature([], tf.string)
            for key in contract.RAW_FEATURE_KEYS}


def _split_files(examples_dir: str, split: str) -> list[str]:
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(os.path.join(examples_dir, f"{split}-*.tfrecord.gz")))


def run_transform(examples_dir: str, out_dir: str, config: TransformConfig | None = None,
                  splits: Sequence[str] = contract.SPLITS,
                  beam_args: Sequence[str] = ("--direct_num_workers=1",)) -> TransformResult:
    """Analyses the train split and transforms every split present in `examples_dir`.

    `examples_dir` holds `<split>-*.tfrecord.gz` as written by `sicot import`. Splits other
    than train that have no files are skipped; a missing train split is an error.
    """
    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
    from tfx_bsl.public import tfxio as tfxio_lib

    from sicot.trainer.transform import text_ops
    from sicot.trainer.transform.preprocessing import preprocessing_fn

    config = config or TransformConfig()
    present = {s: _split_files(examples_dir, s) for s in splits}
    if not present.get("train"):
        raise FileNotFoundError(
            f"{examples_dir}: no train-*.tfrecord.gz to analyse (run `sicot import` first)")
    present = {s: f for s, f in present.items() if f}

    transformed_root = os.path.join(out_dir, TRANSFORMED_DIR)
    graph_dir = os.path.join(out_dir, TRANSFORM_GRAPH_DIR)
    tf.io.gfile.makedirs(transformed_root)
    schema = schema_utils.schema_from_feature_spec(raw_feature_spec())
    custom_config = config.to_dict()

    def fn(inputs):
        return preprocessing_fn(inputs, custom_config)

    def tfxio(split):
        return tfxio_lib.TFExampleRecord(
            file_pattern=os.path.join(examples_dir, f"{split}-*.tfrecord.gz"),
            schema=schema, telemetry_descriptors=["sicot", "transform_local"])

    def read(pipeline, split):
        return (pipeline
                | f"Read{split}" >> tfxio(split).BeamSource()
                | f"TextOps{split}" >> beam.Map(text_ops.with_text_ops))

    options = PipelineOptions(list(beam_args) + ["--runner=DirectRunner"])
    with beam.Pipeline(options=options) as pipeline:
        with tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp"), force_tf_compat_v1=False):
            raw_train = read(pipeline, "train")
            adapter_config = tfxio("train").TensorAdapterConfig()
            transform_fn = ((raw_train, adapter_config)
                            | "Analyze" >> tft_beam.AnalyzeDataset(fn))
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(graph_dir)
            for split in present:
                raw = raw_train if split == "train" else read(pipeline, split)
                # Record batches, encoded by tfx_bsl's C++ RecordBatchToExamplesEncoder (as the
                # TFX Transform executor does), instead of one Python dict and one
                # ExampleProtoCoder call per example: those were the largest per-image cost
                # (docs/benchmarks.md, issue 17).
                transformed = (((raw, adapter_config), transform_fn)
                               | f"Transform{split}" >> tft_beam.TransformDataset(
                                   output_record_batches=True))
                _ = (transformed
                     | f"Encode{split}" >> tft_beam.EncodeTransformedDataset()
                     | f"Write{split}" >> beam.io.WriteToTFRecord(
                         os.path.join(transformed_root, split),
                         file_name_suffix=".tfrecord.gz",
                         compression_type=beam.io.filesystem.CompressionTypes.GZIP))

    # TFX's Transform also writes the raw schema beside the graph: the serving signatures
    # parse raw tf.Examples with tft.TFTransformOutput(...).raw_feature_spec().
    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata(schema),
        os.path.join(graph_dir, tft.TFTransformOutput.RAW_METADATA_DIR))

    counts = {}
    files = {}
    for split in present:
        pattern = os.path.join(transformed_root, f"{split}-*.tfrecord.gz")
        files[split] = pattern
        counts[split] = sum(1 for f in sorted(tf.io.gfile.glob(pattern))
                            for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))
    return TransformResult(transform_output_dir=graph_dir, transformed_files=files,
                           num_examples=counts)
