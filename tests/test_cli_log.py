"""Where `sicot` sends library noise: a log file under the command's run folder."""
import argparse
import os
import tempfile

from sicot import cli, console


def test_log_goes_under_the_run_folder_even_when_its_parents_are_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no runs/ folder yet
    path = cli.log_path(argparse.Namespace(command="demo", workdir="runs/demo"))
    assert path == os.path.join("runs/demo", console.LOG_FOLDER, "sicot-demo.log")
    assert not (tmp_path / "runs").exists()  # made when something is logged, not before


def test_remote_or_uncreatable_folders_log_under_the_temporary_folder(tmp_path):
    fallback = os.path.join(tempfile.gettempdir(), "sicot", console.LOG_FOLDER)
    remote = cli.log_path(argparse.Namespace(command="run", pipeline_root="gs://bucket/root"))
    assert remote == os.path.join(fallback, "sicot-run.log")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    blocked = cli.log_path(argparse.Namespace(command="train", out=str(blocker / "out")))
    assert blocked == os.path.join(fallback, "sicot-train.log")
    served = cli.log_path(argparse.Namespace(command="serve"))
    assert served == os.path.join(fallback, "sicot-serve.log")
