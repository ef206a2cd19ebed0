"""The pipeline and the server with the data and the serving dir on a non-local file system
(slow).

A dataset (manifests + images) in `ram://` (TensorFlow's in-process file system; Beam reaches
it through `sicot.pipeline.gfile_beam_filesystem`) goes through `sicot run` with the serving
dir in `ram://` too; bad records land in the quarantine; `sicot serve`'s server loads the
pushed version from `ram://` and answers over gRPC. Why `ram://` and not a GCS emulator for
this part: TensorFlow 2.16's `gs://` file system cannot be pointed at one (see
docs/pipeline.md, "What was tested against what"); Beam's GCS client can, and is tested
against one in `test_gcs_emulator.py`. Why the pipeline root is local here: tf.Transform
publishes its transform graph by renaming a folder, and TF's ram:// renames only the folder
entry, not the files under it (the graph arrives empty), which no real object store does.
"""
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf

from sicot import cli
from sicot.pipeline import run_summary

pytestmark = pytest.mark.slow

TRAIN_COUNTS = [8, 6, 4, 3, 2, 2]


def _upload(local_root, url):
    """Copies a local folder tree to `url` with tf.io.gfile."""
    for folder, _, files in tf.io.gfile.walk(local_root):
        target = url + folder[len(local_root):]
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(f"{folder}/{name}", f"{target}/{name}", overwrite=True)


def test_run_and_serve_with_data_and_serving_dir_in_ram(tmp_path, datasets, capsys):
    bad = json.dumps({"image": "images/missing.jpg", "title": "gone", "label": "class-00"})
    escape = json.dumps({"image": "../outside.jpg", "title": "escape", "label": "class-00"})
    local = datasets.write_manifest_dataset(tmp_path / "data", TRAIN_COUNTS, per_class_test=2,
                                            per_class_eval=1, bad_rows={"train": [bad, escape]})
    data, serving = "ram://sicot-e2e/data", "ram://sicot-e2e/serving"
    root = str(tmp_path / "root")
    _upload(local, data)
    tf.io.gfile.copy(f"{local}/images/train_0_0.jpg", "ram://sicot-e2e/outside.jpg")
    mlmd = str(tmp_path / "metadata.sqlite")
    assert cli.main(["run", "--data", data, "--pipeline-root", root, "--serving-dir", serving,
                     "--metadata-path", mlmd, "--epochs", "1", "--image-size", "16",
                     "--band-edges", "3,6", "--max-bad-fraction", "0.2"]) == 0
    printed = capsys.readouterr().out
    runs = run_summary.latest_run(mlmd, "sicot")
    for node in ("ManifestExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert runs[node].state == "COMPLETE", (node, runs[node].state)

    examples = runs["ManifestExampleGen"].outputs["examples"][0]
    with tf.io.gfile.GFile(f"{examples}/quarantine.jsonl") as f:
        quarantined = [json.loads(line) for line in f if line.strip()]
    reasons = sorted(q["reason"].split(":")[0] for q in quarantined)
    assert reasons == ["missing_image", "path_outside"], quarantined
    assert runs["ManifestExampleGen"].properties["examples"]["examples_train"] == sum(TRAIN_COUNTS)

    # the pushed version, in ram://, loads in the server and answers over gRPC
    versions = [v.rstrip("/") for v in tf.io.gfile.listdir(serving)]
    assert len(versions) == 1 and versions[0].isdigit(), versions
    assert f"{serving}/{versions[0]}" in printed
    import tensorflow_text  # noqa: F401 - the Transform graph's ops
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from sicot.serving.server import ModelServer, ServerOptions

    server = ModelServer(ServerOptions(model_name="sicot", model_base_path=serving,
                                       grpc_port=0, rest_port=0, poll_seconds=0)).start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "sicot"
        images = [datasets.image_bytes(c, seed=7) for c in range(3)]
        request.inputs["image"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=60)
        classes = tf.make_ndarray(reply.outputs["classes"])
        assert classes.shape[0] == 3
        assert {c.decode() for c in classes.ravel()} <= {f"class-{c:02d}" for c in range(6)}
        assert np.all(np.isfinite(tf.make_ndarray(reply.outputs["scores"])))
        assert reply.model_spec.version.value == int(versions[0])
        channel.close()
    finally:
        server.stop()
