"""`sicot predict`, `sicot serve` (as a real subprocess) and the deployment files."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from sicot.cli import main
from sicot.errors import UserError
from sicot.serving.cli import read_batching_parameters

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(REPO, "serving", "deploy")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, images):
    path = tmp_path_factory.mktemp("cli") / "red.jpg"
    path.write_bytes(images["red_jpeg"])
    return str(path)


def expected_top(sicot_in_process, image_file, signature="serving_default", **text):
    with open(image_file, "rb") as f:
        inputs = {"image": tf.constant([f.read()])}
    inputs.update({k: tf.constant([v.encode()]) for k, v in text.items()})
    out = sicot_in_process.signatures[signature](**inputs)
    return [c.decode() for c in out["classes"].numpy()[0]], out["scores"].numpy()[0]


def test_predict_over_grpc_prints_top_k(sicot_server, sicot_in_process, image_file, capsys):
    code = main(["predict", "--server", f"127.0.0.1:{sicot_server.grpc_port}", "--image", image_file])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("model sicot version 1 signature serving_default (gRPC")
    rows = re.findall(r"^\s+(\d)\. (\S+)\s+([0-9.]+)\s+\(id (\d+)\)$", out, re.MULTILINE)
    classes, scores = expected_top(sicot_in_process, image_file)
    assert [r[1] for r in rows] == classes
    assert [float(r[2]) for r in rows] == pytest.approx([round(float(s), 4) for s in scores], abs=1e-4)


def test_predict_over_rest_with_text_uses_image_text_signature(sicot_server, sicot_in_process, image_file, capsys):
    code = main(["predict", "--server", f"127.0.0.1:{sicot_server.rest_port}", "--rest", "--image", image_file,
                 "--title", "word0 sale", "--tags", "gift|shop", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["signature"] == "serving_image_text"
    classes, scores = expected_top(sicot_in_process, image_file, "serving_image_text",
                                   title="word0 sale", tags="gift|shop")
    assert [t["class"] for t in doc["top_k"]] == classes
    assert [t["score"] for t in doc["top_k"]] == pytest.approx(scores.tolist(), rel=1e-6)


def test_predict_user_and_server_errors(sicot_server, image_file, tmp_path, capsys):
    server = f"127.0.0.1:{sicot_server.grpc_port}"
    assert main(["predict", "--server", server, "--image", str(tmp_path / "missing.jpg")]) == 2
    assert "--image" in capsys.readouterr().err
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("hello")
    assert main(["predict", "--server", server, "--image", str(text_file)]) == 2
    assert "not a JPEG, PNG, GIF or BMP file" in capsys.readouterr().err
    assert main(["predict", "--server", "localhost", "--image", image_file]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert main(["predict", "--server", server, "--image", image_file, "--model-version", "9"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["predict", "--server", server, "--image", image_file, "--signature", "serving_default",
                 "--title", "x"]) == 2
    assert "--title/--tags would be ignored" in capsys.readouterr().err


def test_serve_rejects_bad_arguments(tmp_path, capsys):
    assert main(["serve", "--model-base-path", str(tmp_path / "nope"), "--model-name", "sicot"]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["serve", "--model-base-path", str(tmp_path), "--model-name", "a/b"]) == 2
    assert "--model-name" in capsys.readouterr().err
    assert main(["serve", "--model-base-path", str(tmp_path), "--model-name", "m", "--max-batch-size", "8"]) == 2
    assert "need --enable-batching" in capsys.readouterr().err
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size { value: 8 }\nmax_batch_sise { value: 3 }\n")
    with pytest.raises(UserError, match="unknown field 'max_batch_sise'"):
        read_batching_parameters(str(bad))
    assert main(["serve", "--model-base-path", str(tmp_path), "--model-name", "m", "--enable-batching",
                 "--max-batch-size", "16", "--allowed-batch-sizes", "4,8"]) == 2
    assert "must equal max_batch_size" in capsys.readouterr().err
    assert main(["serve", "--model-base-path", str(tmp_path), "--model-name", "m",
                 "--tensorflow-intra-op-parallelism", "-1"]) == 2
    assert "--tensorflow-intra-op-parallelism" in capsys.readouterr().err


def test_batching_parameters_file_with_repeated_allowed_batch_sizes(tmp_path):
    from types import SimpleNamespace

    from sicot.serving.cli import batching_options

    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 16 }\nnum_batch_threads { value: 2 }\n"
                    "allowed_batch_sizes: 4\nallowed_batch_sizes: 8  # comment\nallowed_batch_sizes: 16\n")
    assert read_batching_parameters(str(path)) == {
        "max_batch_size": 16, "num_batch_threads": 2, "allowed_batch_sizes": [4, 8, 16]}
    args = SimpleNamespace(enable_batching=True, batching_parameters_file=str(path), max_batch_size=None,
                           batch_timeout_micros=0, max_enqueued_batches=None, num_batch_threads=None,
                           allowed_batch_sizes=None)
    options = batching_options(args)
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads,
            options.allowed_batch_sizes) == (16, 0, 2, (4, 8, 16))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_subprocess_answers_and_stops_on_sigterm(fixture_base_path, image_file, capsys):
    grpc_port, rest_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sicot.cli", "serve", "--model-base-path", fixture_base_path, "--model-name",
         "sicot", "--grpc-port", str(grpc_port), "--rest-port", str(rest_port), "--enable-batching",
         "--batching-parameters-file", os.path.join(DEPLOY, "batching_parameters.txt")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines, ready = [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if line.startswith("sicot serve: model"):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(180), "".join(lines[-30:])
        assert f"gRPC 127.0.0.1:{grpc_port} REST 127.0.0.1:{rest_port}" in "".join(lines)
        assert main(["predict", "--server", f"127.0.0.1:{grpc_port}", "--image", image_file]) == 0
        assert main(["predict", "--server", f"127.0.0.1:{rest_port}", "--rest", "--image", image_file]) == 0
        out = capsys.readouterr().out
        assert out.count("  1. ") == 2
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        reader.join(10)
    assert code == 0, "".join(lines[-30:])
    assert any("shutting down" in line for line in lines)


# -- deployment files -------------------------------------------------------------------------
def test_models_config_is_a_valid_model_server_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(DEPLOY, "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("sicot", "/models/sicot", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1


def test_batching_and_monitoring_configs():
    values = read_batching_parameters(os.path.join(DEPLOY, "batching_parameters.txt"))
    assert values == {"max_batch_size": 32, "batch_timeout_micros": 2000, "max_enqueued_batches": 100,
                      "num_batch_threads": 4}
    with open(os.path.join(DEPLOY, "monitoring.config")) as f:
        text = f.read()
    assert re.search(r'prometheus_config\s*\{\s*enable:\s*true,?\s*path:\s*"/monitoring/prometheus/metrics"', text)


def test_dockerfile_and_kubernetes_manifest_agree():
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        dockerfile = f.read()
    assert re.search(r"^FROM tensorflow/serving:\S+", dockerfile, re.MULTILINE)
    for flag in ("--model_config_file=/config/models.config", "--port=8500", "--rest_api_port=8501",
                 "--batching_parameters_file=/config/batching_parameters.txt",
                 "--monitoring_config_file=/config/monitoring.config"):
        assert flag in dockerfile
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(DEPLOY, "k8s.yaml")) as f:
        deployment, service = list(yaml.safe_load_all(f))
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/sicot/metadata"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == \
        "/monitoring/prometheus/metrics"
