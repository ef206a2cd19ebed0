"""`sicot compile --target vertex` writes a Vertex pipeline JSON that kfp's protos load back."""
import json

from google.protobuf import json_format

from sicot import cli

EXPECTED_COMPONENTS = {
    "ManifestExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
    "ValidationGate", "Transform", "Trainer", "Evaluator", "ErrorReport", "Canary", "Pusher",
}


def _load(path):
    from kfp.pipeline_spec import pipeline_spec_pb2

    with open(path) as f:
        job_dict = json.load(f)
    job = json_format.ParseDict(job_dict, pipeline_spec_pb2.PipelineJob(),
                                ignore_unknown_fields=False)
    spec = json_format.ParseDict(json_format.MessageToDict(job.pipeline_spec),
                                 pipeline_spec_pb2.PipelineSpec())
    return job, spec


def test_vertex_json_names_every_component_and_the_gpu_trainer(tmp_path):
    out = tmp_path / "vertex" / "sicot.json"
    rc = cli.main(["compile", "--target", "vertex", "--out", str(out),
                   "--image", "example.com/sicot:1", "--schema", "curated",
                   "--vertex-project", "proj", "--gpu-type", "NVIDIA_L4", "--gpu-count", "2",
                   "--epochs", "3"])
    assert rc == 0
    job, spec = _load(out)
    tasks = set(spec.root.dag.tasks)
    assert EXPECTED_COMPONENTS <= tasks, sorted(tasks)
    # the baseline resolver of the Evaluator compiles to resolver tasks
    assert any("latest_blessed_model_resolver" in t for t in tasks)
    assert job.display_name == "sicot"

    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {"example.com/sicot:1"}

    # Trainer runs as a Vertex custom job on the requested GPUs, and gets the model config.
    trainer_params = spec.root.dag.tasks["Trainer"].inputs.parameters
    custom_config = json.loads(
        trainer_params["custom_config"].runtime_value.constant_value.string_value)
    pool = custom_config["ai_platform_training_args"]["worker_pool_specs"][0]
    assert pool["machine_spec"]["accelerator_type"] == "NVIDIA_L4"
    assert pool["machine_spec"]["accelerator_count"] == 2
    assert pool["container_spec"]["image_uri"] == "example.com/sicot:1"
    # the whole model config travels (sicot.trainer.options), so the Trainer needs no defaults
    from sicot.trainer.model.config import ModelConfig
    assert (ModelConfig.from_dict(custom_config["model"])
            == ModelConfig.preset("sicot").replace(epochs=3))
    assert custom_config["ai_platform_enable_vertex"] is True


def test_compile_without_eval_split_trains_against_test(tmp_path):
    out = tmp_path / "p.json"
    assert cli.main(["compile", "--target", "vertex", "--out", str(out),
                     "--no-eval-split", "--data-format", "csv"]) == 0
    _, spec = _load(out)
    assert {"SchemaGen", "CurateInferredSchema", "Trainer", "Evaluator"} <= set(spec.root.dag.tasks)
    params = spec.root.dag.tasks["ManifestExampleGen"].inputs.parameters
    input_config = json.loads(params["input_config"].runtime_value.constant_value.string_value)
    assert [s["pattern"] for s in input_config["splits"]] == ["train.csv", "test.csv"]
    eval_args = json.loads(
        spec.root.dag.tasks["Trainer"].inputs.parameters["eval_args"]
        .runtime_value.constant_value.string_value)
    assert eval_args["splits"] == ["test"]


def test_compile_rejects_bad_thresholds(tmp_path, capsys):
    rc = cli.main(["compile", "--target", "vertex", "--out", str(tmp_path / "p.json"),
                   "--min-top1", "1.5"])
    assert rc == 2
    assert "overall_min_top1" in capsys.readouterr().err


def test_compile_with_spans_warm_start_and_backbone_weights(tmp_path, capsys):
    out = tmp_path / "spans.json"
    weights = "gs://BUCKET/weights/resnet50_notop.h5"
    args = ["compile", "--target", "vertex", "--out", str(out), "--data", "gs://BUCKET/data",
            "--span-folder", "day-{SPAN}", "--warm-start", "--backbone", "resnet50",
            "--backbone-weights", weights, "--backbone-frozen-epochs", "1"]
    assert cli.main(args) == 0
    _, spec = _load(out)
    tasks = set(spec.root.dag.tasks)
    assert any("latest_model_resolver" in t for t in tasks), sorted(tasks)
    params = spec.root.dag.tasks["ManifestExampleGen"].inputs.parameters
    input_config = json.loads(params["input_config"].runtime_value.constant_value.string_value)
    assert [s["pattern"] for s in input_config["splits"]] == [
        "day-{SPAN}/train.jsonl", "day-{SPAN}/eval.jsonl", "day-{SPAN}/test.jsonl"]
    trainer = spec.root.dag.tasks["Trainer"]
    assert "base_model" in trainer.inputs.artifacts
    custom_config = json.loads(
        trainer.inputs.parameters["custom_config"].runtime_value.constant_value.string_value)
    assert custom_config["model"]["backbone_weights"] == weights
    # A rolling window needs SpanRangeStrategy, which the Vertex compiler refuses: said up front.
    assert cli.main(args + ["--rolling-spans", "3"]) == 2
    assert "SpanRangeStrategy" in capsys.readouterr().err


def test_compile_with_the_pretrained_efficientnet_tower(tmp_path):
    """No weights path: the trainer image's pinned package ships them; 96 px and the frozen
    schedule reach the Transform and the Trainer."""
    out = tmp_path / "lite0.json"
    assert cli.main(["compile", "--target", "vertex", "--out", str(out), "--data",
                     "gs://BUCKET/data", "--backbone", "efficientnet_lite0", "--epochs", "4"]) == 0
    _, spec = _load(out)
    trainer = spec.root.dag.tasks["Trainer"]
    custom_config = json.loads(
        trainer.inputs.parameters["custom_config"].runtime_value.constant_value.string_value)
    model = custom_config["model"]
    assert (model["backbone"], model["backbone_weights"], model["backbone_frozen_epochs"]) == (
        "efficientnet_lite0", "", 4)
    assert '"image_size": 96' in out.read_text().replace('\\"', '"')
