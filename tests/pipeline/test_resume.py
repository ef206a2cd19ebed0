"""Kill-and-resume: `sicot run` SIGKILLed while the Transform executor runs, then again while
the Trainer executor runs, then run to the end. Finished components are not redone (their
executions are counted in MLMD), earlier artifacts are byte-identical after the kills, and the
pushed model is complete.

`sicot run` runs as a subprocess in its own process group; the test watches the MLMD SQLite
file for the component's execution in state RUNNING, waits until the executor has written
into its output folder, then kills the whole group (the Beam workers included) with SIGKILL:
nothing gets a chance to clean up.
"""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

PIPELINE = "sicot"
TRAIN_COUNTS = [8, 6, 5, 4, 3, 3, 2]
UPSTREAM = ["ManifestExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
            "ValidationGate"]


def execution_states(mlmd_path: str) -> dict[str, list[str]]:
    """node id -> the states of its executions, oldest first (read-only SQLite query)."""
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.exists(mlmd_path):
        return {}
    try:
        db = sqlite3.connect(f"file:{mlmd_path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(
                "SELECT c.name, e.id, e.last_known_state FROM Execution e "
                "JOIN Association a ON a.execution_id = e.id "
                "JOIN Context c ON c.id = a.context_id "
                "JOIN Type t ON t.id = c.type_id "
                "WHERE t.name = 'node' ORDER BY e.id").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError as e:  # the writer holds the lock, or no tables yet
        if "locked" in str(e) or "no such table" in str(e):
            return {}
        raise
    states: dict[str, list[str]] = {}
    for name, _, state in rows:
        node = name.split(".", 1)[1] if name.startswith(PIPELINE + ".") else name
        states.setdefault(node, []).append(metadata_store_pb2.Execution.State.Name(state))
    return states


def tree_digest(path: str) -> dict[str, str]:
    """relative file path -> sha256 of every file under path."""
    digest = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as f:
                digest[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return digest


def start_run(args, log_path):
    log = open(log_path, "wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "sicot.cli", *args], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=env), log


def kill_when_running(proc, mlmd_path, node, output_dir, timeout=900):
    """SIGKILL the run's process group once `node` is RUNNING and has written into
    `output_dir` (<pipeline root>/<node>). Returns the seconds waited."""
    started = time.monotonic()
    running_since = None
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"sicot run exited ({proc.returncode}) before {node} ran")
        states = execution_states(mlmd_path).get(node, [])
        if states and states[-1] == "RUNNING":
            running_since = running_since or time.monotonic()
            wrote = any(files for _, _, files in os.walk(output_dir))
            if wrote or time.monotonic() - running_since > 20:
                time.sleep(2)  # let it get well into its work
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(60)
                return time.monotonic() - started
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"{node} did not start within {timeout} s")


def test_killed_runs_resume_without_redoing_finished_components(tmp_path, datasets):
    from sicot.pipeline import local_runner, run_summary

    data = datasets.write_manifest_dataset(tmp_path / "data", TRAIN_COUNTS, per_class_test=2,
                                           per_class_eval=1)
    root, serving = str(tmp_path / "root"), str(tmp_path / "serving")
    mlmd = local_runner.metadata_path(root)
    args = ["run", "--data", data, "--pipeline-root", root, "--serving-dir", serving,
            "--epochs", "1", "--image-size", "32", "--band-edges", "3,5"]

    # 1. Killed during Transform.
    proc, log = start_run(args, tmp_path / "run1.log")
    kill_when_running(proc, mlmd, "Transform", os.path.join(root, "Transform"))
    log.close()
    states = execution_states(mlmd)
    assert {n: states[n] for n in UPSTREAM} == {n: ["COMPLETE"] for n in UPSTREAM}, states
    assert states["Transform"] == ["RUNNING"], states  # killed mid-execution, never finished
    assert "Trainer" not in states
    examples_uri = os.path.join(root, "ManifestExampleGen", "examples")
    examples_before = tree_digest(examples_uri)
    assert examples_before

    # 2. Re-run: upstream from the cache; killed during Trainer.
    proc, log = start_run(args, tmp_path / "run2.log")
    kill_when_running(proc, mlmd, "Trainer", os.path.join(root, "Trainer"))
    log.close()
    states = execution_states(mlmd)
    assert {n: states[n] for n in UPSTREAM} == {n: ["COMPLETE", "CACHED"] for n in UPSTREAM}, states
    assert states["Transform"] == ["RUNNING", "COMPLETE"], states
    assert states["Trainer"] == ["RUNNING"], states
    assert not os.path.exists(serving) or not os.listdir(serving)

    # 3. Re-run to the end: only the Trainer and what follows it run.
    proc, log = start_run(args, tmp_path / "run3.log")
    code = proc.wait(1800)
    log.close()
    output = (tmp_path / "run3.log").read_text(errors="replace")
    assert code == 0, output[-3000:]
    states = execution_states(mlmd)
    assert {n: states[n] for n in UPSTREAM} == {
        n: ["COMPLETE", "CACHED", "CACHED"] for n in UPSTREAM}, states
    assert states["Transform"] == ["RUNNING", "COMPLETE", "CACHED"], states
    assert states["Trainer"] == ["RUNNING", "COMPLETE"], states
    assert states["Evaluator"] == ["COMPLETE"] and states["Pusher"] == ["COMPLETE"], states

    # earlier artifacts were not touched by the kills or the re-runs
    assert tree_digest(examples_uri) == examples_before
    runs = run_summary.latest_run(mlmd, PIPELINE)
    transform_graph = runs["Transform"].outputs["transform_graph"][0]
    assert os.path.isfile(os.path.join(transform_graph, "transform_fn", "saved_model.pb"))
    assert os.path.isfile(os.path.join(transform_graph, "transformed_metadata", "schema.pbtxt"))

    # exactly one pushed version, complete (saved_model.pb and variables), and it loads
    versions = os.listdir(serving)
    assert len(versions) == 1 and versions[0].isdigit(), versions
    pushed = os.path.join(serving, versions[0])
    assert os.path.isfile(os.path.join(pushed, "saved_model.pb"))
    assert os.path.isfile(os.path.join(pushed, "variables", "variables.index"))
    from sicot.serving.servable import LoadedModel

    model = LoadedModel("sicot", int(versions[0]), pushed)
    _, out = model.predict("serving_default", {"image": [datasets.image_bytes(0, seed=5)]})
    assert out["scores"].shape[0] == 1
    model.close()
