"""Multi-worker training: two `run_fn` processes on loopback with TF_CONFIG, chief-only export.

Also run as a script: `python test_multi_worker.py --worker SPEC_JSON` is one worker process
(TF_CONFIG in its environment); it prints one JSON line with its task, the optimizer steps it
took and a checksum of its weights.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from sicot.trainer import distribution

HERE = os.path.abspath(__file__)


def test_tf_config_parsing_and_chief_rules():
    assert distribution.read_tf_config({}) == {}
    cluster = {"chief": ["h:1"], "worker": ["h:2", "h:3"]}
    chief = {"cluster": cluster, "task": {"type": "chief", "index": 0}}
    worker0 = {"cluster": cluster, "task": {"type": "worker", "index": 0}}
    assert distribution.num_workers(chief) == 3
    assert distribution.is_chief(chief) and not distribution.is_chief(worker0)
    # Without a chief task, worker 0 is the chief.
    no_chief = {"cluster": {"worker": ["h:2", "h:3"]}, "task": {"type": "worker", "index": 0}}
    assert distribution.is_chief(no_chief)
    assert not distribution.is_chief({**no_chief, "task": {"type": "worker", "index": 1}})
    assert distribution.is_chief({})  # single process
    assert distribution.worker_dir("/out/serving", chief) == "/out/serving"
    temp = distribution.worker_dir("/out/serving", worker0)
    assert temp != "/out/serving" and temp.startswith("/out/") and "worker-0" in temp
    # a URL keeps its scheme (Vertex model dirs are gs://)
    assert distribution.worker_dir("gs://b/out/serving/", worker0) == \
        "gs://b/out/.serving-tmp-worker-0"


@pytest.mark.parametrize("raw, message", [
    ("{not json", "not valid JSON"),
    ("[1]", "must be a JSON object"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "task.type='chief' is not in the cluster"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     "task.index=3 is out of range"),
])
def test_bad_tf_config_is_a_clear_error(raw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        distribution.read_tf_config({"TF_CONFIG": raw})


def test_cleanup_removes_only_a_non_chief_temp_dir(tmp_path):
    cluster = {"worker": ["h:1", "h:2"]}
    chief = {"cluster": cluster, "task": {"type": "worker", "index": 0}}
    other = {"cluster": cluster, "task": {"type": "worker", "index": 1}}
    real = tmp_path / "serving"
    real.mkdir()
    temp = distribution.worker_dir(str(real), other)
    os.makedirs(temp)
    distribution.cleanup_worker_dir(str(real), chief)
    distribution.cleanup_worker_dir(str(real), other)
    assert real.is_dir() and not os.path.exists(temp)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_in_sync_and_only_the_chief_exports(tiny_transform, tmp_path):
    import numpy as np
    import tensorflow as tf

    ports = _free_ports(2)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]}
    serving_dir = str(tmp_path / "serving")
    run_dir = str(tmp_path / "run")
    train_steps = 4
    crt_epochs = 3
    spec = {"train_files": [tiny_transform.transformed_files["train"]],
            "eval_files": [tiny_transform.transformed_files["eval"]],
            "transform_output": tiny_transform.transform_output_dir,
            "serving_model_dir": serving_dir, "model_run_dir": run_dir,
            "train_steps": train_steps,
            "model": {"preset": "sicot", "epochs": 2, "batch_size": 8,
                      "embedding_dim": 16, "token_dim": 8, "attention_rank": 4,
                      "augment": False, "crt_epochs": crt_epochs}}
    procs = []
    for task_type in ("chief", "worker"):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": task_type, "index": 0}}),
            TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen(
            [sys.executable, HERE, "--worker", json.dumps(spec)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    reports = []
    deadline = time.time() + 900
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1, deadline - time.time()))
            assert proc.returncode == 0, err[-3000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    by_type = {r["task_type"]: r for r in reports}
    assert set(by_type) == {"chief", "worker"}
    for report in reports:
        assert report["num_replicas_in_sync"] == 2
        # Both took every step. The optimizer counted is stage 2's: the sicot preset ends with
        # the cRT classifier re-training, crt_epochs epochs of train_steps / epochs steps.
        assert report["optimizer_steps"] == crt_epochs * train_steps // 2
    # Synchronous all-reduce: both workers end with the same weights.
    np.testing.assert_allclose(by_type["chief"]["weight_sums"],
                               by_type["worker"]["weight_sums"], rtol=1e-5)
    # Only the chief's outputs remain.
    assert os.path.isfile(os.path.join(serving_dir, "saved_model.pb"))
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert leftovers == []
    loaded = tf.saved_model.load(serving_dir)
    images = []
    for record in tf.data.TFRecordDataset(
            sorted(tf.io.gfile.glob(os.path.join(
                os.path.dirname(os.path.dirname(tiny_transform.transform_output_dir)),
                "raw", "eval-*.tfrecord.gz"))), compression_type="GZIP").take(3):
        example = tf.train.Example.FromString(record.numpy())
        images.append(example.features.feature["image"].bytes_list.value[0])
    out = loaded.signatures["serving_default"](image=tf.constant(images))
    scores = out["scores"].numpy()
    assert scores.shape[0] == 3 and np.all(scores >= 0) and np.all(scores.sum(-1) <= 1.0 + 1e-5)
    assert all(c.startswith(b"class") for c in out["classes"].numpy().ravel())


def _worker_main(spec_json):
    spec = json.loads(spec_json)
    from tfx.v1.components import FnArgs

    from sicot.trainer.task import run_fn

    fn_args = FnArgs(train_files=spec["train_files"], eval_files=spec["eval_files"],
                     transform_output=spec["transform_output"],
                     transform_graph_path=spec["transform_output"],
                     serving_model_dir=spec["serving_model_dir"],
                     model_run_dir=spec["model_run_dir"], train_steps=spec["train_steps"],
                     eval_steps=None, custom_config={"model": spec["model"]})
    model = run_fn(fn_args)
    import numpy as np
    import tensorflow as tf

    config = distribution.read_tf_config()
    task_type, index = distribution.task_of(config)
    print(json.dumps({
        "task_type": task_type, "index": index,
        "num_replicas_in_sync": tf.distribute.get_strategy().num_replicas_in_sync
        if tf.distribute.has_strategy() else model.distribute_strategy.num_replicas_in_sync,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "weight_sums": [float(np.sum(np.asarray(w))) for w in model.trainable_weights]}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2])
