"""Beam presets, blessing thresholds, dataset layout detection and `sicot run` input errors."""
import pytest

from sicot import cli
from sicot.pipeline import configs
from sicot.pipeline import pipeline as sicot_pipeline
from sicot.trainer.model.config import ModelConfig
from sicot.trainer.transform.preprocessing import TransformConfig


def test_beam_presets_give_the_documented_flags():
    assert configs.beam_pipeline_args("direct") == [
        "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    assert configs.beam_pipeline_args("direct-parallel", num_workers=4) == [
        "--direct_running_mode=multi_processing", "--direct_num_workers=4"]
    dataflow = configs.beam_pipeline_args("dataflow", project="p", region="r",
                                          temp_location="gs://b/tmp", setup_file="/s/setup.py")
    assert dataflow == ["--runner=DataflowRunner", "--project=p", "--region=r",
                        "--temp_location=gs://b/tmp", "--experiments=use_runner_v2",
                        "--setup_file=/s/setup.py"]
    assert "--flink_master=h:8081" in configs.beam_pipeline_args("flink", flink_master="h:8081")
    spark = configs.beam_pipeline_args("spark", spark_rest_url="http://h:6066",
                                       extra=["--x=1"])
    assert spark[0] == "--runner=SparkRunner" and "--spark_rest_url=http://h:6066" in spark
    assert spark[-1] == "--x=1"


def test_default_dataflow_setup_file_is_the_repository_setup_py():
    import os

    args = configs.beam_pipeline_args("dataflow", project="p", region="r",
                                      temp_location="gs://b/t")
    setup = [a for a in args if a.startswith("--setup_file=")][0].split("=", 1)[1]
    assert os.path.isfile(setup) and os.path.basename(setup) == "setup.py"


def test_bad_presets_and_thresholds_are_named():
    with pytest.raises(ValueError, match="project, region, temp_location"):
        configs.beam_pipeline_args("dataflow")
    with pytest.raises(ValueError, match="unknown Beam preset 'gpu'"):
        configs.beam_pipeline_args("gpu")
    with pytest.raises(ValueError, match="few_min_top1 must be in"):
        configs.BlessingThresholds(few_min_top1=-0.1)


def test_dataset_layout(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "test.csv").write_text("")
    layout = sicot_pipeline.detect_dataset_layout(str(tmp_path))
    assert layout == sicot_pipeline.DatasetLayout(
        "manifest", {"train": "train.jsonl", "test": "test.csv"})
    (tmp_path / "eval.jsonl").write_text("")
    (tmp_path / "eval.csv").write_text("")  # .jsonl wins
    assert sicot_pipeline.detect_dataset_layout(str(tmp_path)).split_files["eval"] == "eval.jsonl"

    records = tmp_path / "records"
    records.mkdir()
    (records / "train-00000-of-00001.tfrecord.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="has no test split"):
        sicot_pipeline.detect_dataset_layout(str(records))
    (records / "test-00000-of-00001.tfrecord.gz").write_bytes(b"")
    assert sicot_pipeline.detect_dataset_layout(str(records)).data_format == "tfrecord"


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--model", "resnet"], "unknown model preset 'resnet'"),
    (["--band-edges", "10"], "--band-edges '10'"),
    (["--band-edges", "10,5"], "need 0 < LOW <= HIGH"),
    (["--max-bad-fraction", "2"], "--max-bad-fraction must be in [0, 1]"),
    (["--schema", "/nope/schema.pbtxt"], "--schema /nope/schema.pbtxt: no such file"),
    (["--allow-unseen-labels", "eval,evel"], "--allow-unseen-labels: unknown split(s) evel"),
])
def test_sicot_run_rejects_bad_input_before_running(tmp_path, capsys, extra, message):
    (tmp_path / "train.jsonl").write_text("")
    (tmp_path / "test.jsonl").write_text("")
    rc = cli.main(["run", "--data", str(tmp_path), "--pipeline-root", str(tmp_path / "r"),
                   "--serving-dir", str(tmp_path / "s")] + extra)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_sicot_run_names_a_data_folder_without_test(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text("")
    rc = cli.main(["run", "--data", str(tmp_path), "--pipeline-root", str(tmp_path / "r"),
                   "--serving-dir", str(tmp_path / "s")])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "no test split" in err


def test_local_runner_settings_from_env(tmp_path):
    from sicot.pipeline import local_runner

    settings = local_runner.settings_from_env({
        "SICOT_DATA": str(tmp_path / "data"), "SICOT_HOME": str(tmp_path / "home"),
        "SICOT_EPOCHS": "2", "SICOT_IMAGE_SIZE": "32", "SICOT_BAND_EDGES": "4,10",
        "SICOT_BEAM_PRESET": "direct-parallel", "SICOT_NO_CACHE": "1",
        "SICOT_ALLOW_UNSEEN_LABELS": "eval, test"})
    assert settings["pipeline_root"] == str(tmp_path / "home" / "tfx" / "sicot")
    assert settings["serving_dir"] == str(tmp_path / "home" / "serving" / "sicot")
    assert settings["model_config"] == ModelConfig.preset("sicot").replace(epochs=2).to_dict()
    assert settings["transform_config"] == TransformConfig(image_size=32,
                                                           band_edges=(4, 10)).to_dict()
    assert settings["beam_pipeline_args"][0] == "--direct_running_mode=multi_processing"
    assert settings["enable_cache"] is False
    assert settings["allow_unseen_labels"] == ["eval", "test"]
    with pytest.raises(ValueError, match="set SICOT_DATA"):
        local_runner.settings_from_env({})


def test_sicot_run_help_lists_the_blessing_gates_with_their_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "blessing gates" in text
    assert "--max-overall-drop F" in text and "default 0.005 = 0.5 points" in text
    assert "--max-few-drop F" in text and "default 0.01 = 1 point" in text
    defaults = configs.BlessingThresholds()
    assert (defaults.max_overall_drop, defaults.max_few_drop) == (0.005, 0.01)


def test_gate_flags_reach_the_thresholds(tmp_path):
    from sicot.pipeline import cli as pipeline_cli

    args = cli.build_parser().parse_args([
        "run", "--data", str(tmp_path), "--pipeline-root", "r", "--serving-dir", "s",
        "--max-few-drop", "0.03", "--min-top1", "0.2"])
    thresholds = pipeline_cli._settings(args)["thresholds"]
    assert thresholds == configs.BlessingThresholds(max_few_drop=0.03, overall_min_top1=0.2)


@pytest.mark.parametrize("dotted", [configs.PREPROCESSING_FN, configs.RUN_FN,
                                    # pipelines compiled before trainer/ had sub-packages
                                    "sicot.trainer.preprocessing.preprocessing_fn"])
def test_dotted_names_the_pipeline_gives_tfx_load(dotted):
    from tfx.utils import import_utils

    from sicot.trainer import task
    from sicot.trainer.transform import preprocessing

    module, _, name = dotted.rpartition(".")
    fn = import_utils.import_func_from_module(module, name)
    assert fn in (preprocessing.preprocessing_fn, task.run_fn)
