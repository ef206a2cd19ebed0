"""bench/long_tail_report.py: a finished run is reused only for the same training options."""
import argparse
import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "long_tail_report", os.path.join(REPO, "bench", "long_tail_report.py"))
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _finished_run(tmp_path, command):
    run = tmp_path / "runs" / "default" / "crt" / "seed1"
    run.mkdir(parents=True)
    (run / "train.log").write_text(command + "\nEpoch 1/20\n")
    return str(run)


def test_reuse_needs_the_same_schedule_seed_and_settings(tmp_path):
    run = _finished_run(tmp_path, "/x/sicot train --data /d --model crt --out /o --epochs 20 "
                                  "--image-size 32 --seed 1 --work-dir /w --set crt_epochs=2")
    same = argparse.Namespace(epochs=20, image_size=32, set=["crt_epochs=2"])
    report._check_reused_run(run, "crt", 1, same)  # other paths do not matter
    for changed in (dict(epochs=5), dict(image_size=64), dict(set=[])):
        args = argparse.Namespace(**{**vars(same), **changed})
        with pytest.raises(SystemExit, match="finished with"):
            report._check_reused_run(run, "crt", 1, args)
