"""Serving under load and faults: `sicot serve` (a subprocess) under load from a second process
(bench/serving_load.py) with mixed valid and malformed requests over gRPC and REST, while a new
version is pushed and then a corrupt one.

  * every valid request succeeds, every malformed one gets TF Serving's status for it;
  * the version swap loses no request; the corrupt version is never served, the server keeps
    the last good version and reports the failure (GetModelStatus, REST status, Prometheus);
  * the server's resident memory stays flat: after warm-up and the swap, a second load of the
    same size grows RSS by less than RSS_GROWTH_LIMIT_MB.

Uses the fixture model of tests/serving/conftest.py (same signatures as the SICoT export,
loads in about a second), so that the load, not the model, is what is measured.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

pytestmark = pytest.mark.slow  # about 2.5 min on 2 busy cores (three loads, each a fresh process)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOAD_TOOL = os.path.join(REPO, "bench", "serving_load.py")
MAX_REQUEST_BYTES = 64 * 1024
REQUESTS = 2000
DURATION_S = 120
RSS_GROWTH_LIMIT_MB = 40


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture()
def served(tmp_path, fixture_saved_models, push_version):
    """`sicot serve` on a base path holding version 1; yields (process, grpc, rest, base)."""
    base = str(tmp_path / "models")
    push_version(fixture_saved_models[0], base, 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sicot.cli", "serve", "--model-base-path", base, "--model-name", "sicot",
         "--grpc-port", "0", "--rest-port", "0", "--poll-seconds", "0.3",
         "--max-request-bytes", str(MAX_REQUEST_BYTES), "--num-threads", "8"],
        stdout=subprocess.PIPE, stderr=open(tmp_path / "serve.log", "wb"), text=True,
        start_new_session=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"gRPC ([\d.]+:\d+) REST ([\d.]+:\d+)", line)
        assert match, f"sicot serve printed {line!r}; log: {(tmp_path / 'serve.log').read_text()[-2000:]}"
        yield proc, match.group(1), match.group(2), base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_load(grpc_addr, rest_addr, requests, out_path, concurrency=8):
    return subprocess.Popen(
        [sys.executable, LOAD_TOOL, "--grpc", grpc_addr, "--rest", rest_addr,
         "--requests", str(requests), "--duration", str(DURATION_S), "--concurrency", str(concurrency),
         "--malformed-every", "4", "--max-request-bytes", str(MAX_REQUEST_BYTES)],
        stdout=open(out_path, "wb"), stderr=subprocess.DEVNULL)


def finish_load(proc, out_path) -> dict:
    code = proc.wait(DURATION_S + 120)
    text = open(out_path).read()
    summary = json.loads(text)
    summary["exit_code"] = code
    return summary


def version_states(grpc_addr) -> dict[int, tuple[str, int, str]]:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    with grpc.insecure_channel(grpc_addr) as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "sicot"
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, 10)
    name = get_model_status_pb2.ModelVersionStatus.State.Name
    return {s.version: (name(s.state), s.status.error_code, s.status.error_message)
            for s in response.model_version_status}


def requests_served(rest_addr) -> float:
    """Requests the server has answered so far (its Prometheus counter, all statuses)."""
    with urllib.request.urlopen(f"http://{rest_addr}/monitoring/prometheus/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(r"^sicot_serving_requests_total\{[^}]*\} (\S+)$", text, re.M))


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def check_summary(summary, requests=REQUESTS):
    assert summary["requests_sent"] == requests, summary
    assert summary["valid_failures"] == 0, summary
    assert summary["malformed_wrong_status"] == 0, summary
    assert summary["transport_errors"] == 0, summary
    assert summary["exit_code"] == 0, summary
    kinds = summary["by_kind"]
    # every malformed kind was sent (and, above, answered as expected)
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("serving_load", LOAD_TOOL)
    tool = module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert set(tool.MALFORMED) <= set(kinds), sorted(kinds)
    assert summary["malformed"] == requests // 4


def test_load_with_version_swap_and_corrupt_version(served, fixture_saved_models, push_version, tmp_path):
    proc, grpc_addr, rest_addr, base = served

    # warm-up (first calls trace the signatures, allocate pools)
    warm = finish_load(start_load(grpc_addr, rest_addr, 400, tmp_path / "warm.json"), tmp_path / "warm.json")
    check_summary(warm, 400)
    rss_warm = rss_mb(proc.pid)

    # load 1: a new version is pushed, then a corrupt one, while requests flow
    load = start_load(grpc_addr, rest_addr, REQUESTS, tmp_path / "load1.json")
    before = requests_served(rest_addr)
    assert wait_for(lambda: requests_served(rest_addr) >= before + 200), "the load did not start"
    push_version(fixture_saved_models[1], base, 2)
    assert wait_for(lambda: version_states(grpc_addr).get(2, ("",))[0] == "AVAILABLE"), version_states(grpc_addr)
    corrupt = os.path.join(base, ".tmp-3")
    os.makedirs(os.path.join(corrupt, "variables"))
    with open(os.path.join(corrupt, "saved_model.pb"), "wb") as f:
        f.write(b"\x0a\xff\xff\xff\x0f this is not a SavedModel")
    os.rename(corrupt, os.path.join(base, "3"))
    assert wait_for(lambda: version_states(grpc_addr).get(3, ("",))[0] == "END"), version_states(grpc_addr)
    assert load.poll() is None, "the load ended before the corrupt version was seen: make it longer"
    load1 = finish_load(load, tmp_path / "load1.json")
    check_summary(load1)
    seen = {int(v) for v in load1["grpc_versions_seen"]}
    assert seen == {1, 2}, load1["grpc_versions_seen"]  # both served, the corrupt one never
    rss_after_swap = rss_mb(proc.pid)

    states = version_states(grpc_addr)
    assert states[2][0] == "AVAILABLE" and states[2][1] == 0, states
    assert states[3][0] == "END" and states[3][1] != 0, states
    assert "Failed to load version 3" in states[3][2], states
    with urllib.request.urlopen(f"http://{rest_addr}/v1/models/sicot", timeout=10) as r:
        rest_status = json.loads(r.read())
    by_version = {s["version"]: s for s in rest_status["model_version_status"]}
    assert by_version["3"]["state"] == "END" and by_version["3"]["status"]["error_code"] != "OK"
    with urllib.request.urlopen(f"http://{rest_addr}/monitoring/prometheus/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert re.search(r'sicot_serving_model_versions_failed\{model="sicot"\} 1\.0', metrics), metrics[-2000:]
    assert re.search(r'sicot_serving_model_version_loaded\{model="sicot",version="2"\} 1\.0', metrics)
    assert re.search(r'sicot_serving_model_version_loaded\{model="sicot",version="1"\} 0\.0', metrics)

    # load 2: the same load again; memory must stay flat
    load2 = finish_load(start_load(grpc_addr, rest_addr, REQUESTS, tmp_path / "load2.json"),
                        tmp_path / "load2.json")
    check_summary(load2)
    assert {int(v) for v in load2["grpc_versions_seen"]} == {2}
    rss_end = rss_mb(proc.pid)
    figures = {"rss_mb_after_warmup": round(rss_warm, 1), "rss_mb_after_swap_load": round(rss_after_swap, 1),
               "rss_mb_after_second_load": round(rss_end, 1),
               "load1": {k: load1[k] for k in ("requests_sent", "valid", "malformed", "valid_failures",
                                               "malformed_wrong_status", "grpc_versions_seen",
                                               "latency_ms", "wall_s")},
               "load2": {k: load2[k] for k in ("requests_sent", "valid", "malformed", "valid_failures",
                                               "malformed_wrong_status", "latency_ms", "wall_s")}}
    print("LOAD FIGURES " + json.dumps(figures))
    assert rss_end - rss_after_swap < RSS_GROWTH_LIMIT_MB, figures
    assert proc.poll() is None, "the server died"
