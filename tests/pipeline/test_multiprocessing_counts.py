"""Beam DirectRunner multi_processing (2 workers) loses or duplicates nothing.

A user reported records dropped by the DirectRunner in multi_processing mode
(tensorflow/data-validation issue 247), so the ExampleGen (ManifestExampleGen through
LocalDagRunner) and the Transform (`transform_local.run_transform`, the same preprocessing_fn
the Transform component runs) are each run in-process and with
`--direct_running_mode=multi_processing --direct_num_workers=2`, and the outputs compared:
record counts, the set of record_ids, the quarantine, the vocabularies and every transformed
example (as a multiset).
"""
import collections
import glob
import hashlib
import os
import shutil

import pytest

MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
SINGLE = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
BAD_TRAIN_ROWS = ['{"image": "images/nope.jpg", "title": "lost", "label": "class-00"}',
                  '{not json']


def _run_example_gen(root, data, beam_args):
    from tfx import v1 as tfx

    from sicot.pipeline import local_runner, run_summary
    from sicot.pipeline.manifest_example_gen import ManifestExampleGen

    name = "mp"
    example_gen = ManifestExampleGen(
        input_base=data,
        split_files={"train": "train.jsonl", "eval": "eval.jsonl", "test": "test.jsonl"},
        import_config={"max_bad_fraction": 0.5})
    pipeline = tfx.dsl.Pipeline(
        pipeline_name=name, pipeline_root=root, components=[example_gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            local_runner.metadata_path(root)),
        beam_pipeline_args=list(beam_args))
    tfx.orchestration.LocalDagRunner().run(pipeline)
    run = run_summary.latest_run(local_runner.metadata_path(root), name)["ManifestExampleGen"]
    assert run.state == "COMPLETE"
    return run.outputs["examples"][0]


def _examples(files):
    import tensorflow as tf

    out = []
    for record in tf.data.TFRecordDataset(sorted(files), compression_type="GZIP"):
        out.append(tf.train.Example.FromString(record.numpy()))
    return out


def _record_ids(split_dir):
    return [e.features.feature["record_id"].bytes_list.value[0].decode()
            for e in _examples(glob.glob(os.path.join(split_dir, "*.gz")))]


def _transformed_multiset(pattern):
    """Each transformed example as a canonical fingerprint; Counter of them."""
    rows = collections.Counter()
    for e in _examples(glob.glob(pattern)):
        parts = []
        for key in sorted(e.features.feature):
            f = e.features.feature[key]
            values = list(f.int64_list.value) or list(f.bytes_list.value) or list(
                f.float_list.value)
            parts.append(f"{key}={hashlib.sha1(repr(values).encode()).hexdigest()}")
        rows[";".join(parts)] += 1
    return rows


def _dataset(tmp_path, datasets):
    return datasets.write_manifest_dataset(
        tmp_path / "data", train_counts=datasets.class_counts(6, 24, 2), per_class_test=2,
        per_class_eval=1, bad_rows={"train": BAD_TRAIN_ROWS})


def _example_gen_both_ways(tmp_path, data):

    uris = {mode: _run_example_gen(str(tmp_path / f"eg_{mode}"), data, args)
            for mode, args in (("single", SINGLE), ("multi", MULTI))}
    ids = {}
    for mode, uri in uris.items():
        ids[mode] = {s: _record_ids(os.path.join(uri, f"Split-{s}"))
                     for s in ("train", "eval", "test")}
    for split in ("train", "eval", "test"):
        single, multi = ids["single"][split], ids["multi"][split]
        assert len(single) > 0
        assert len(multi) == len(single), split  # nothing dropped or duplicated
        assert len(set(multi)) == len(multi)
        assert set(multi) == set(single), split
    with open(os.path.join(uris["single"], "quarantine.jsonl")) as f:
        quarantine_single = sorted(f.read().splitlines())
    with open(os.path.join(uris["multi"], "quarantine.jsonl")) as f:
        quarantine_multi = sorted(f.read().splitlines())
    assert len(quarantine_single) == len(BAD_TRAIN_ROWS)
    assert quarantine_multi == quarantine_single
    return uris, ids


@pytest.mark.slow
def test_example_gen_and_transform_match_single_process(tmp_path, datasets):
    from sicot.trainer.transform.preprocessing import TransformConfig
    from sicot.trainer.transform.run_local import run_transform

    uris, ids = _example_gen_both_ways(tmp_path, _dataset(tmp_path, datasets))
    # Transform the same examples (the train split analysed) both ways.
    examples_dir = tmp_path / "examples"
    examples_dir.mkdir()
    for split in ("train", "eval", "test"):
        for i, f in enumerate(sorted(glob.glob(os.path.join(uris["single"], f"Split-{split}",
                                                            "*.gz")))):
            shutil.copy(f, examples_dir / f"{split}-{i:05d}.tfrecord.gz")
    config = TransformConfig(image_size=16, max_tokens=6, min_token_count=1)
    results = {mode: run_transform(str(examples_dir), str(tmp_path / f"tft_{mode}"), config,
                                   beam_args=args)
               for mode, args in (("single", SINGLE), ("multi", MULTI))}
    expected = {s: len(ids["single"][s]) for s in ("train", "eval", "test")}
    assert results["single"].num_examples == expected
    assert results["multi"].num_examples == expected
    for split in expected:
        assert (_transformed_multiset(results["multi"].transformed_files[split])
                == _transformed_multiset(results["single"].transformed_files[split])), split
    for vocab in ("tokens", "label", "label_counts"):
        single = open(os.path.join(results["single"].transform_output_dir, "transform_fn",
                                   "assets", vocab)).read()
        multi = open(os.path.join(results["multi"].transform_output_dir, "transform_fn",
                                  "assets", vocab)).read()
        assert multi == single and single.strip(), vocab
    with open(os.path.join(results["single"].transform_output_dir, "transform_fn", "assets",
                           "label_counts")) as f:
        total = sum(int(float(line.split(" ", 1)[0])) for line in f if line.strip())
    assert total == expected["train"]
