"""`gs://` against a GCS emulator on loopback: the ManifestExampleGen executor reads a dataset
(manifests + images) from the emulator and writes its examples, counts and quarantine there.

The emulator is `gcp-storage-emulator` (PyPI, pinned in requirements/constraints.txt, installed
by the `test` extra), started here on 127.0.0.1 and stopped after. What it exercises: Beam's
GCS client (google-cloud-storage, pointed at the emulator by STORAGE_EMULATOR_HOST), which is
what `sicot.paths` uses for gs:// and what Beam's sinks and sources use. TensorFlow's own gs://
file system cannot be pointed at an emulator in TF 2.16 (docs/pipeline.md, "What was tested
against what"), so the TensorFlow side of a remote run is tested on ram:// in
`test_remote_storage.py`. The work runs in a child process so that the emulator's environment
is set before google-auth and Beam are imported, and no credentials of this machine are used.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

BUCKET = "sicot-test"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gcs_emulator(tmp_path):
    """`http://127.0.0.1:PORT` of an in-memory emulator with bucket BUCKET; stopped after."""
    port = _free_port()
    command = [os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator"), "start",
               "--host", "127.0.0.1", "--port", str(port), "--in-memory",
               "--default-bucket", BUCKET, "-q"]
    log = open(tmp_path / "emulator.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the GCS emulator did not start: "
                                       f"{(tmp_path / 'emulator.log').read_text()}")
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _child_env(url):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "CLOUDSDK_", "GCE_"))}
    env.update({
        "STORAGE_EMULATOR_HOST": url,        # google-cloud-storage (Beam's GCS client)
        "NO_GCE_CHECK": "true",              # google-auth: no metadata-server probe
        "GCE_METADATA_HOST": "127.0.0.1:9",  # and should one happen: loopback, closed port
        "GCE_METADATA_IP": "127.0.0.1:9",
        "GOOGLE_CLOUD_PROJECT": "sicot-test",
        "CLOUDSDK_CONFIG": "/nonexistent",   # no gcloud credentials of this machine
    })
    return env


CHILD = r'''
import json, os, sys
local, out = sys.argv[1], sys.argv[2]
from apache_beam.io.filesystems import FileSystems
from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils
from sicot import paths
from sicot.pipeline.manifest_example_gen_executor import ManifestExampleGenExecutor

data = "gs://%(bucket)s/data"
for folder, _, files in os.walk(local):
    for name in files:
        path = os.path.join(folder, name)
        paths.write_bytes(data + path[len(local):], open(path, "rb").read())
paths.write_bytes("gs://%(bucket)s/outside.jpg", open(local + "/images/train_0_0.jpg", "rb").read())

examples = standard_artifacts.Examples()
examples.uri = "gs://%(bucket)s/root/ManifestExampleGen/examples/1"
splits = [example_gen_pb2.Input.Split(name=s, pattern=s + ".jsonl")
          for s in ("train", "eval", "test")]
executor = ManifestExampleGenExecutor(BaseBeamExecutor.Context(
    beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
executor.Do({}, {"examples": [examples]}, {
    "input_base": data,
    "input_config": proto_utils.proto_to_json(example_gen_pb2.Input(splits=splits)),
    "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
    "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
    "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    "import_config": json.dumps({"max_bad_fraction": 0.5}),
})
quarantine = paths.read_bytes(examples.uri + "/quarantine.jsonl").decode()
written = {s: paths.glob(examples.uri + "/Split-" + s + "/*") for s in ("train", "eval", "test")}
import apache_beam as beam
counts = {}
for split, files in written.items():
    with beam.Pipeline(argv=["--direct_num_workers=1"]) as p:
        _ = (p | beam.io.ReadFromTFRecord(examples.uri + "/Split-" + split + "/*")
               | beam.combiners.Count.Globally()
               | beam.io.WriteToText(os.path.join(out, split), num_shards=1,
                                     shard_name_template=""))
    counts[split] = int(open(os.path.join(out, split)).read())
print("RESULT " + json.dumps({
    "properties": {k: examples.get_int_custom_property(k)
                   for k in ("examples_train", "quarantined_train", "examples_test")},
    "quarantine": [json.loads(l) for l in quarantine.splitlines() if l.strip()],
    "files": written, "counts": counts,
    "manifest_visible_to_beam": FileSystems.exists(data + "/train.jsonl"),
}))
''' % {"bucket": BUCKET}


def test_manifest_example_gen_reads_and_writes_gcs_emulator(tmp_path, datasets, gcs_emulator):
    bad = [json.dumps({"image": "images/missing.jpg", "label": "class-00"}),
           json.dumps({"image": "../outside.jpg", "label": "class-01"}),
           "{not json"]
    local = datasets.write_manifest_dataset(tmp_path / "data", [5, 4, 3], per_class_test=2,
                                            per_class_eval=1, bad_rows={"train": bad})
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run([sys.executable, str(script), local, str(tmp_path)],
                          env=_child_env(gcs_emulator), capture_output=True, text=True,
                          timeout=900)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["manifest_visible_to_beam"]
    # every record: an example in the emulator, or a quarantine line there with its reason
    assert result["counts"] == {"train": 12, "eval": 3, "test": 6}
    assert result["properties"] == {"examples_train": 12, "quarantined_train": 3,
                                    "examples_test": 6}
    reasons = sorted(q["reason"].split(":")[0] for q in result["quarantine"])
    assert reasons == ["bad_json", "missing_image", "path_outside"], result["quarantine"]
    assert all(f.startswith(f"gs://{BUCKET}/root/") for fs in result["files"].values()
               for f in fs) and all(result["files"].values())
