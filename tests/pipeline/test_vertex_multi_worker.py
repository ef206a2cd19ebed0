"""`sicot compile --vertex-workers N`: a chief pool and a worker pool for multi-worker training."""
import json

import pytest

from sicot import cli
from sicot.pipeline import configs


def test_worker_count_adds_a_worker_pool_with_the_same_machines():
    single = configs.vertex_training_config(project="p", region="r", image="img")
    assert len(single["ai_platform_training_args"]["worker_pool_specs"]) == 1
    config = configs.vertex_training_config(project="p", region="r", image="img",
                                            accelerator_type="NVIDIA_L4", accelerator_count=2,
                                            worker_count=4)
    chief, workers = config["ai_platform_training_args"]["worker_pool_specs"]
    assert chief["replica_count"] == 1 and workers["replica_count"] == 3
    assert workers["machine_spec"] == chief["machine_spec"] == {
        "machine_type": "n1-standard-8", "accelerator_type": "NVIDIA_L4",
        "accelerator_count": 2}
    assert workers["container_spec"] == {"image_uri": "img"}
    with pytest.raises(ValueError, match="worker_count must be >= 1, got 0"):
        configs.vertex_training_config(project="p", region="r", image="img", worker_count=0)


def test_compile_with_vertex_workers_puts_both_pools_in_the_trainer_config(tmp_path):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    out = tmp_path / "sicot.json"
    rc = cli.main(["compile", "--target", "vertex", "--out", str(out),
                   "--image", "example.com/sicot:1", "--schema", "curated",
                   "--vertex-project", "proj", "--vertex-workers", "3"])
    assert rc == 0
    with open(out) as f:
        job = json_format.ParseDict(json.load(f), pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(json_format.MessageToDict(job.pipeline_spec),
                                 pipeline_spec_pb2.PipelineSpec())
    params = spec.root.dag.tasks["Trainer"].inputs.parameters
    custom_config = json.loads(params["custom_config"].runtime_value.constant_value.string_value)
    pools = custom_config["ai_platform_training_args"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 2]
    assert {p["container_spec"]["image_uri"] for p in pools} == {"example.com/sicot:1"}


def test_bad_worker_count_is_a_clear_error(tmp_path, capsys):
    rc = cli.main(["compile", "--target", "vertex", "--out", str(tmp_path / "p.json"),
                   "--image", "example.com/sicot:1", "--vertex-project", "proj",
                   "--vertex-workers", "0"])
    assert rc != 0
    assert "--vertex-workers 0: must be >= 1" in capsys.readouterr().err
