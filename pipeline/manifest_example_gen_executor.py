"""Beam executor of `ManifestExampleGen`: dataset manifests + images -> GZIP TFRecords.

For each input split (pattern `train.jsonl`, `eval.csv`, ...) the executor reads the manifest
with `sicot.data.manifest.read_manifest`, spreads the rows over the workers (the images are
the heavy part, the manifest is small text), and converts each row with
`sicot.data.importer.convert_row`, the same code `sicot import` runs. Every row ends up
either in the split's TFRecords or in `quarantine.jsonl` (one file for all splits, each line
`{"split", "source", "record", "reason"}`) next to the `Split-*` folders of the Examples
artifact; `import_counts-<split>.json` holds the counts. The component fails, naming the
manifest, the share and the most common reasons, when a split's bad share exceeds
`ImportConfig.max_bad_fraction` (or a split has no good record at all); TFX then deletes the
unpublished outputs, so the quarantine file is first copied to
`<pipeline root>/<component id>/failed_quarantine/<execution>/quarantine.jsonl`, named in the
error, so that nothing is lost.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Dict, List

import apache_beam as beam
from absl import logging
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from sicot import paths

IMPORT_CONFIG_KEY = "import_config"
QUARANTINE_FILE = "quarantine.jsonl"
COUNTS_FILE_PREFIX = "import_counts-"
FAILED_QUARANTINE_DIR = "failed_quarantine"  # <component dir>/failed_quarantine/<id>/
_QUARANTINE_TAG = "quarantine"


def import_config_from_dict(values: Dict[str, Any] | None):
    """`sicot.data.importer.ImportConfig` from the JSON-friendly dict the pipeline carries."""
    import dataclasses

    from sicot.data.importer import ImportConfig

    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(ImportConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown ImportConfig keys {unknown}; known: {sorted(known)}")
    for name, value in list(values.items()):
        if isinstance(value, list):  # JSON has no tuples (allowed_dirs)
            values[name] = tuple(value)
    return ImportConfig(**values)


def reason_code(reason: str) -> str:
    """The stable short code of a quarantine reason ('missing_image: images/x.jpg ...')."""
    return str(reason).split(":", 1)[0].strip() or "unknown"


class _ConvertRow(beam.DoFn):
    """ManifestRow -> serialized tf.Example, or a quarantine entry on the tagged output."""

    def __init__(self, data_dir: str, import_config: Dict[str, Any], split: str):
        self._data_dir = data_dir
        self._import_config = import_config
        self._split = split

    def setup(self):
        from sicot.data import importer

        self._convert_row = importer.convert_row
        self._config = import_config_from_dict(self._import_config)

    def process(self, row):
        try:
            example, bad = self._convert_row(row, self._data_dir, self._config)
        except Exception as e:  # noqa: BLE001 - a row must never be lost, even on a bug
            example, bad = None, {
                "source": getattr(row, "source", "?"),
                "record": getattr(row, "raw", repr(row)),
                "reason": f"internal_error: {type(e).__name__}: {e}",
            }
        if example is not None:
            yield example
        else:
            entry = dict(bad)
            entry["split"] = self._split
            yield beam.pvalue.TaggedOutput(
                _QUARANTINE_TAG, json.dumps(entry, ensure_ascii=False, sort_keys=True))


def _read_rows(manifest_path: str, order_seed: int = 0):
    """The manifest's rows in a seeded random order (`sicot.data.manifest.permuted`): the
    split's examples are written mixed whatever order the manifest holds."""
    from sicot.data.manifest import permuted, read_manifest

    yield from permuted(read_manifest(manifest_path), order_seed)


@beam.ptransform_fn
def _ManifestToExample(pipeline, exec_properties: Dict[str, Any], split_pattern: str):  # noqa: N802
    """The plain ExampleGen hook (rows that fail conversion are dropped here, not written).

    `ManifestExampleGenExecutor.Do` does not use it: it writes the quarantine file too. It
    exists so that the executor remains a complete `BaseExampleGenExecutor`.
    """
    data_dir = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    config = json.loads(exec_properties.get(IMPORT_CONFIG_KEY) or "{}")
    results = (
        pipeline
        | "ManifestPath" >> beam.Create([_manifest_path(data_dir, split_pattern)])
        | "ReadManifest" >> beam.FlatMap(_read_rows)
        | "Spread" >> beam.Reshuffle()
        | "Convert" >> beam.ParDo(_ConvertRow(data_dir, config, split_pattern)).with_outputs(
            _QUARANTINE_TAG, main="examples"))
    return results.examples


def _manifest_path(data_dir: str, pattern: str) -> str:
    matches = paths.glob(os.path.join(data_dir, pattern))
    if len(matches) != 1:
        raise ValueError(
            f"ExampleGen: split pattern {pattern!r} in {data_dir} must match exactly one "
            f"manifest file, matched {len(matches)}: {matches[:5]}")
    return matches[0]


class ManifestExampleGenExecutor(BaseExampleGenExecutor):
    """Reads SICoT dataset folders (manifests + images); see the module docstring."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802
        return _ManifestToExample

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        if output_config.split_config.splits:
            raise ValueError("ManifestExampleGen takes its splits from the dataset's manifests; "
                             "output_config.split_config must be empty")

        data_dir = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        import_config = json.loads(exec_properties.get(IMPORT_CONFIG_KEY) or "{}")
        max_bad_fraction = import_config_from_dict(import_config).max_bad_fraction

        examples_channel = output_dict[standard_component_specs.EXAMPLES_KEY]
        examples_artifact = artifact_utils.get_single_instance(examples_channel)
        split_names = example_gen_utils.generate_output_split_names(input_config, output_config)
        examples_artifact.split_names = artifact_utils.encode_split_names(split_names)
        output_file_format = exec_properties.get(
            standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
            example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
        out_dir = examples_artifact.uri
        manifests = {s.name: _manifest_path(data_dir, s.pattern) for s in input_config.splits}

        with self._make_beam_pipeline() as pipeline:
            quarantined = []
            for split in input_config.splits:
                name = split.name
                results = (
                    pipeline
                    | f"ManifestPath[{name}]" >> beam.Create([manifests[name]])
                    | f"ReadManifest[{name}]" >> beam.FlatMap(
                        _read_rows, import_config_from_dict(import_config).order_seed)
                    | f"Spread[{name}]" >> beam.Reshuffle()
                    | f"Convert[{name}]" >> beam.ParDo(
                        # Image paths resolve against the manifest's own folder (the span
                        # folder with {SPAN} patterns), local or remote alike.
                        _ConvertRow(os.path.dirname(manifests[name]), import_config,
                                    name)).with_outputs(
                            _QUARANTINE_TAG, main="examples"))
                _ = (results.examples
                     | f"WriteSplit[{name}]" >> write_split.WriteSplit(
                         artifact_utils.get_split_uri(examples_channel, name),
                         output_file_format, exec_properties))
                n_good = results.examples | f"CountGood[{name}]" >> beam.combiners.Count.Globally()
                n_bad = (results[_QUARANTINE_TAG]
                         | f"CountBad[{name}]" >> beam.combiners.Count.Globally())
                _ = (n_good
                     | f"Counts[{name}]" >> beam.Map(
                         lambda good, bad, split: json.dumps(
                             {"split": split, "examples": good, "quarantined": bad}),
                         bad=beam.pvalue.AsSingleton(n_bad), split=name)
                     | f"WriteCounts[{name}]" >> beam.io.WriteToText(
                         os.path.join(out_dir, COUNTS_FILE_PREFIX + name), ".json",
                         num_shards=1, shard_name_template=""))
                quarantined.append(results[_QUARANTINE_TAG])
            _ = (quarantined
                 | "AllQuarantined" >> beam.Flatten()
                 | "WriteQuarantine" >> beam.io.WriteToText(
                     os.path.join(out_dir, QUARANTINE_FILE), num_shards=1,
                     shard_name_template=""))

        counts = read_import_counts(out_dir, split_names)
        reasons = _reason_counts(os.path.join(out_dir, QUARANTINE_FILE))
        problems = []
        for name in split_names:
            good, bad = counts[name]["examples"], counts[name]["quarantined"]
            total = good + bad
            top = ", ".join(f"{code} x{n}" for code, n in reasons[name].most_common(5))
            logging.info("ExampleGen split %s: %d records, %d examples, %d quarantined%s",
                         name, total, good, bad, f" ({top})" if top else "")
            examples_artifact.set_int_custom_property(f"examples_{name}", good)
            examples_artifact.set_int_custom_property(f"quarantined_{name}", bad)
            if good == 0:
                problems.append(f"split '{name}' ({manifests[name]}) has no usable record "
                                f"({bad} quarantined{': ' + top if top else ''})")
            elif bad / total > max_bad_fraction:
                problems.append(
                    f"split '{name}' ({manifests[name]}): {bad} of {total} records quarantined "
                    f"({bad / total:.1%} > max_bad_fraction {max_bad_fraction:.1%}): {top}")
        if problems:
            # TFX deletes the outputs of a failed execution: keep the quarantine beside them.
            kept = os.path.join(os.path.dirname(os.path.dirname(out_dir)), FAILED_QUARANTINE_DIR,
                                os.path.basename(out_dir), QUARANTINE_FILE)
            paths.copy(os.path.join(out_dir, QUARANTINE_FILE), kept)
            raise ValueError(
                "ExampleGen: too many bad records: " + "; ".join(problems)
                + f". Every bad record and its reason is in {kept}")
        examples_utils_set_formats(examples_channel, exec_properties, output_file_format)
        logging.info("Examples generated in %s; quarantine in %s", out_dir,
                     os.path.join(out_dir, QUARANTINE_FILE))


def examples_utils_set_formats(examples_channel, exec_properties, output_file_format):
    from tfx.components.util import examples_utils

    payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    for artifact in examples_channel:
        if payload_format:
            examples_utils.set_payload_format(artifact, payload_format)
        if output_file_format:
            examples_utils.set_file_format(
                artifact, write_split.to_file_format_str(output_file_format))


def read_import_counts(examples_uri: str, split_names: List[str]) -> Dict[str, Dict[str, int]]:
    """split -> {"examples": n, "quarantined": n} as written by the executor."""
    counts = {}
    for name in split_names:
        path = os.path.join(examples_uri, COUNTS_FILE_PREFIX + name + ".json")
        counts[name] = json.loads(paths.read_bytes(path).decode("utf-8").strip())
    return counts


def _reason_counts(quarantine_path: str) -> Dict[str, collections.Counter]:
    reasons: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    if paths.exists(quarantine_path):
        for line in paths.read_bytes(quarantine_path).decode("utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                reasons[entry["split"]][reason_code(entry.get("reason", ""))] += 1
    return reasons
