"""`sicot train` / `sicot evaluate`: argument errors (fast) and a tiny end-to-end run (slow)."""
import json
import os

import pytest

from sicot.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_unknown_set_key_is_a_user_error(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--data", str(tmp_path), "--model", "ce", "--out",
                        str(tmp_path / "o"), "--set", "learnin_rate=1")
    assert code == 2 and "learnin_rate" in err


def test_badly_typed_set_value_is_a_user_error(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--data", str(tmp_path), "--model", "ce", "--out",
                        str(tmp_path / "o"), "--set", "tau=high")
    assert code == 2 and "'high' is not a float" in err


def test_missing_data_folder_is_a_user_error(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--data", str(tmp_path / "nope"), "--model", "ce",
                        "--out", str(tmp_path / "o"))
    assert code == 2 and "nope" in err


def test_bad_image_size_and_band_edges_are_user_errors(capsys, tmp_path):
    code, _, err = _run(capsys, "train", "--data", str(tmp_path), "--model", "ce", "--out",
                        str(tmp_path / "o"), "--image-size", "4")
    assert code == 2 and "image" in err
    code, _, err = _run(capsys, "train", "--data", str(tmp_path), "--model", "ce", "--out",
                        str(tmp_path / "o"), "--band-edges", "100,20")
    assert code == 2 and "--band-edges" in err


def test_evaluate_without_a_saved_model_is_a_user_error(capsys, tmp_path):
    code, _, err = _run(capsys, "evaluate", "--model", str(tmp_path), "--data", str(tmp_path))
    assert code == 2 and "saved_model.pb" in err


@pytest.mark.slow
def test_train_and_evaluate_end_to_end(capsys, tmp_path):
    import tensorflow as tf

    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--classes", "6", "--max-per-class", "25",
                 "--imbalance", "10", "--eval-per-class", "2", "--test-per-class", "3",
                 "--image-size", "24", "--no-progress"]) == 0
    out, work = tmp_path / "sicot", tmp_path / "work"
    code, stdout, _ = _run(capsys, "train", "--data", str(data), "--model", "sicot", "--out",
                           str(out), "--epochs", "1", "--image-size", "16", "--batch-size", "16",
                           "--work-dir", str(work), "--set", "embedding_dim=16")
    assert code == 0, stdout
    report = json.loads((out / "train_report.json").read_text())
    assert report["examples"]["train"] > 0 and report["eval_split"] == "eval"
    # 1 co-trained epoch, then the preset's cRT stage 2 epochs.
    from sicot.trainer.model.config import ModelConfig

    assert len(report["epoch_seconds"]) == 1 + ModelConfig.preset("sicot").crt_epochs
    assert (out / "run" / "model.keras").is_file()
    assert any(f.startswith("events.out.tfevents") for _, _, files in os.walk(out / "run")
               for f in files)  # TensorBoard wrote its logs

    code, stdout, _ = _run(capsys, "evaluate", "--model", str(out), "--data", str(data),
                           "--json", str(tmp_path / "eval.json"))
    assert code == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["records"] == 18 and ev["rejected_records"] == 0
    for mode in ("image_only", "image_text"):
        bands = ev["results"][mode]
        assert bands["overall"]["count"] == 18
        assert sum(bands[b]["count"] for b in ("many", "medium", "few")) == 18
        assert 0 <= bands["overall"]["top1"] <= bands["overall"]["top5"] <= 1
    assert "image_only  overall" in stdout

    # cRT reuses the transformed examples and runs its classifier-only second stage.
    code, stdout, _ = _run(capsys, "train", "--data", str(data), "--model", "crt", "--out",
                           str(tmp_path / "crt"), "--epochs", "1", "--image-size", "16",
                           "--work-dir", str(work), "--set", "crt_epochs=1")
    assert code == 0 and "reusing the transformed examples" in stdout
    history = json.loads((tmp_path / "crt" / "run" / "history.json").read_text())
    assert len(history["history"]["epoch_seconds"]) == 2  # stage 1 + stage 2
    saved = tf.saved_model.load(json.loads(
        (tmp_path / "crt" / "train_report.json").read_text())["saved_model"])
    assert "serving_image_text" in saved.signatures


@pytest.mark.slow
def test_changed_transform_settings_rerun_into_the_same_work_dir(tmp_path):
    """A work dir whose stamp no longer matches (other Transform settings, or a newer sicot
    whose TransformConfig changed) is rebuilt in place: the stale examples and transform
    output are replaced, not written into (WriteTransformFn refused a non-empty folder)."""
    import tensorflow_transform as tft

    from sicot.trainer.cli import TRANSFORM_STAMP, prepare_examples
    from sicot.trainer.transform.preprocessing import TransformConfig

    data, work = tmp_path / "data", tmp_path / "work"
    assert main(["synth", "--out", str(data), "--classes", "4", "--max-per-class", "6",
                 "--imbalance", "2", "--eval-per-class", "1", "--test-per-class", "1",
                 "--image-size", "24", "--no-progress"]) == 0
    logs = []
    first = prepare_examples(str(data), str(work), TransformConfig(image_size=16), logs.append)
    second = prepare_examples(str(data), str(work), TransformConfig(image_size=20), logs.append)
    assert not any("reusing" in line for line in logs)
    assert second.num_examples == first.num_examples
    stamp = json.loads((work / TRANSFORM_STAMP).read_text())
    assert stamp["key"]["transform"]["image_size"] == 20
    output = tft.TFTransformOutput(second.transform_output_dir)
    (size,) = output.vocabulary_by_name("image_size")
    assert int(size) == 20
    third = prepare_examples(str(data), str(work), TransformConfig(image_size=20), logs.append)
    assert third == second and "reusing" in logs[-1]
