"""The Enroller in the pipeline: built only with a catalogue, its model the candidate of every
component after it, compiled for Vertex; bad catalogue settings refused before running. (The
Enroller running for real: tests/pipeline/test_full_pipeline.py; its body, the code of `sicot
enroll` on Trainer artifacts: tests/trainer/enrollment/test_catalogue.py.)"""
import json

import pytest

from sicot import cli
from sicot.pipeline import configs
from sicot.pipeline import pipeline as sicot_pipeline
from sicot.pipeline.enroller import catalogue_fingerprint

LAYOUT = sicot_pipeline.DatasetLayout("manifest", {"train": "train.jsonl", "test": "test.jsonl"})
CONSUMERS = ("Evaluator", "ErrorReport", "Canary", "Pusher", "BulkInferrer")


def _build(tmp_path, **settings):
    return sicot_pipeline.create_pipeline(
        pipeline_root=str(tmp_path / "root"), data_root=str(tmp_path / "data"),
        serving_dir=str(tmp_path / "serving"), dataset_layout=LAYOUT, score_splits=["test"],
        **settings)


def _model_producers(pipeline):
    return {c.id: c.inputs["model"].producer_component_id for c in pipeline.components
            if c.id in CONSUMERS}


def test_a_catalogue_puts_the_enroller_between_trainer_and_evaluator(tmp_path):
    catalogue = tmp_path / "catalogue.jsonl"
    catalogue.write_text(json.dumps({"label": "new-sku", "title": "new"}) + "\n")
    plain = _build(tmp_path)
    assert "Enroller" not in [c.id for c in plain.components]
    assert set(_model_producers(plain).values()) == {"Trainer"}

    enrolled = _build(tmp_path, catalog=str(catalogue), enroll_config={"trained_budget": 0.02})
    ids = [c.id for c in enrolled.components]
    assert [i for i in ids if i != "Enroller"] == [c.id for c in plain.components]
    assert ids.index("Enroller") == ids.index("Trainer") + 1
    assert _model_producers(enrolled) == {c: "Enroller" for c in CONSUMERS}
    enroller = next(c for c in enrolled.components if c.id == "Enroller")
    assert enroller.inputs["trained_model"].producer_component_id == "Trainer"
    assert enroller.inputs["trained_model_run"].producer_component_id == "Trainer"
    params = enroller.exec_properties
    assert params["catalog"] == str(catalogue)
    assert params["enroll_fn"] == configs.ENROLL_FN
    assert json.loads(params["settings"]) == {"trained_budget": 0.02}
    # a changed catalogue changes the Enroller's settings, so it is not reused from the cache
    assert params["catalog_fingerprint"] == catalogue_fingerprint(str(catalogue))
    catalogue.write_text(json.dumps({"label": "other-sku"}) + "\n")
    assert catalogue_fingerprint(str(catalogue)) != params["catalog_fingerprint"]


def test_a_missing_catalogue_or_no_trainer_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match=f"catalogue {tmp_path}/nope.jsonl: no such file"):
        _build(tmp_path, catalog=str(tmp_path / "nope.jsonl"))
    (tmp_path / "c.jsonl").write_text("")
    with pytest.raises(ValueError, match="the Enroller needs the Trainer"):
        _build(tmp_path, catalog=str(tmp_path / "c.jsonl"), stop_after="transform")
    assert catalogue_fingerprint("ram://no/such/catalogue.jsonl") == ""  # checked at run time

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("")
    (data / "test.jsonl").write_text("")
    run = ["run", "--data", str(data), "--pipeline-root", str(tmp_path / "r"),
           "--serving-dir", str(tmp_path / "s")]
    assert cli.main(run + ["--catalog", str(tmp_path / "nope.jsonl")]) == 2
    assert f"--catalog {tmp_path / 'nope.jsonl'}: no such file" in capsys.readouterr().err
    assert cli.main(run + ["--trained-budget", "0.05"]) == 2  # an enrolment setting alone
    assert "pass --catalog FILE.jsonl too" in capsys.readouterr().err
    assert cli.main(run + ["--catalog", str(tmp_path / "c.jsonl"),
                           "--trained-budget", "1.5"]) == 2
    assert "--trained-budget 1.5: must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_compiled_for_vertex_the_enroller_feeds_evaluator_and_pusher(tmp_path, capsys):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    out = tmp_path / "p.json"
    args = ["compile", "--target", "vertex", "--out", str(out), "--image", "example.com/s:1",
            "--catalog", "gs://BUCKET/catalogue/catalogue.jsonl", "--max-images-per-sku", "3"]
    assert cli.main(args) == 0
    job = json_format.ParseDict(json.loads(out.read_text()), pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(json_format.MessageToDict(job.pipeline_spec),
                                 pipeline_spec_pb2.PipelineSpec())
    tasks = spec.root.dag.tasks
    assert "Enroller" in tasks
    for consumer in ("Evaluator", "Canary", "Pusher"):
        model = tasks[consumer].inputs.artifacts["model"].task_output_artifact
        assert (model.producer_task, model.output_artifact_key) == ("Enroller", "model")
    enroller = tasks["Enroller"]
    assert enroller.inputs.artifacts["trained_model"].task_output_artifact.producer_task == (
        "Trainer")
    params = enroller.inputs.parameters
    assert (params["catalog"].runtime_value.constant_value.string_value
            == "gs://BUCKET/catalogue/catalogue.jsonl")
    assert json.loads(params["settings"].runtime_value.constant_value.string_value) == {
        "max_images_per_sku": 3, "use_text": True, "trained_budget": 0.01, "scoring": "auto",
        "max_trained_drop": 0.01}
    # a file of this machine would not exist on Vertex's: refused with the reason
    assert cli.main(args[:-4] + ["--catalog", str(tmp_path / "c.jsonl")]) == 2
    assert "cannot read a file of this one" in capsys.readouterr().err


def test_the_tfx_cli_runner_reads_the_catalogue_from_the_environment(tmp_path, monkeypatch):
    from sicot.pipeline import local_runner

    monkeypatch.chdir(tmp_path)
    env = {"SICOT_DATA": "data"}
    assert local_runner.settings_from_env(env)["catalog"] is None
    settings = local_runner.settings_from_env({**env, "SICOT_CATALOG": "new/catalogue.jsonl"})
    assert settings["catalog"] == str(tmp_path / "new" / "catalogue.jsonl")


def _canary_blessing(tmp_path, warnings, refuse=1, evaluator_blessed=1):
    """The Canary's executor on real artifacts: an enrolled model whose Enroller recorded
    `warnings`, blessed (or not) by the Evaluator."""
    from tfx.types import standard_artifacts

    from sicot.pipeline.canary import Canary

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    model.set_int_custom_property("enrolment_warnings", len(warnings))
    model.set_string_custom_property("enrolment_warning", "; ".join(warnings))
    model_blessing = standard_artifacts.ModelBlessing()
    model_blessing.set_int_custom_property("blessed", evaluator_blessed)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    Canary.EXECUTOR_SPEC.executor_class().Do(
        {"model": [model], "model_blessing": [model_blessing], "examples": [examples]},
        {"blessing": [blessing]},
        {"limits": "{}", "canary_fn": configs.CANARY_FN, "num_records": 16,
         "refuse_enrolment_warnings": refuse})
    return {k: blessing.get_custom_property(k) for k in ("blessed", "reason")}


def test_the_canary_refuses_an_enrolled_model_whose_enrolment_check_warned(tmp_path):
    warning = ("Enroller: enrolled SKUs would almost never be answered: image-only queries "
               "(visual head, budget scoring) name them for 0.0% of ...")
    refused = _canary_blessing(tmp_path, [warning])
    assert refused["blessed"] == 0
    assert refused["reason"] == (f"not served: the enrolment check warned: {warning} (push it "
                                 f"anyway: --allow-enrolment-warnings)")
    # the Evaluator's refusal comes first and is the reason given
    assert "the Evaluator did not bless" in _canary_blessing(
        tmp_path, [warning], evaluator_blessed=0)["reason"]
    # the pipeline passes the setting: refuse by default, not with allow_enrolment_warnings
    catalogue = tmp_path / "catalogue.jsonl"
    catalogue.write_text(json.dumps({"label": "new-sku", "title": "new"}) + "\n")
    for allow, refuse in ((False, 1), (True, 0)):
        built = _build(tmp_path, catalog=str(catalogue), thresholds=configs.BlessingThresholds(
            allow_enrolment_warnings=allow))
        canary = next(c for c in built.components if c.id == "Canary")
        assert canary.exec_properties["refuse_enrolment_warnings"] == refuse
    args = cli.build_parser().parse_args([
        "run", "--data", str(tmp_path), "--pipeline-root", "r", "--serving-dir", "s",
        "--catalog", str(catalogue), "--allow-enrolment-warnings"])
    from sicot.pipeline import cli as pipeline_cli

    assert pipeline_cli._settings(args)["thresholds"].allow_enrolment_warnings
