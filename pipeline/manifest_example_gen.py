"""`ManifestExampleGen`: the TFX ExampleGen for SICoT dataset folders.

A dataset folder holds `train.jsonl` and `test.jsonl` (optionally `eval.jsonl`; or `.csv`
with the same columns) and the images they name (see `sicot.data.manifest`). This is a
`FileBasedExampleGen` (same driver: the manifests' fingerprints decide whether a cached run
is reused) whose executor converts rows with `sicot.data.importer.convert_row`, quarantining
the bad ones; see `manifest_example_gen_executor`.

Caching note: the fingerprint covers the manifest files only, not the images they name.
Replace an image in place and TFX reuses the cached examples: re-run with caching off
(`sicot run --no-cache`) or touch the manifest.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from sicot.pipeline import manifest_example_gen_executor as executor


class ManifestExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        executor.IMPORT_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
    }


class ManifestExampleGen(FileBasedExampleGen):
    """ExampleGen over a SICoT dataset folder.

    Args:
      input_base: the dataset folder.
      split_files: split name -> manifest file name inside `input_base`
        (e.g. {"train": "train.jsonl", "test": "test.jsonl"}).
      import_config: `sicot.data.importer.ImportConfig` fields as a dict (e.g.
        {"max_bad_fraction": 0.05}); defaults for the rest.
    """

    SPEC_CLASS = ManifestExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.ManifestExampleGenExecutor)

    def __init__(self, input_base: str, split_files: Mapping[str, str],
                 import_config: Optional[Dict[str, Any]] = None):
        if not split_files:
            raise ValueError("ManifestExampleGen needs at least one split file")
        input_config = example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=name, pattern=pattern)
            for name, pattern in split_files.items()])
        output_config = example_gen_pb2.Output()
        spec = ManifestExampleGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            custom_config=None,
            range_config=None,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            import_config=json.dumps(dict(import_config or {}), sort_keys=True),
            examples=self._examples_channel(),
        )
        # Skip FileBasedExampleGen.__init__ (it builds its own spec without import_config).
        super(FileBasedExampleGen, self).__init__(spec=spec)

    @staticmethod
    def _examples_channel():
        from tfx import types
        from tfx.types import standard_artifacts

        return types.Channel(type=standard_artifacts.Examples)
