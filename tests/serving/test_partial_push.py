"""The Pusher never exposes a half-written version: a push killed at any point leaves the server
serving the previous version.

TFX 1.16's Pusher (tfx/components/pusher/executor.py) writes straight into
`<serving dir>/<version>/`: `io_utils.copy_dir(model, dest, deny_regex_patterns=['saved_model\\.pb'])`
first, then copies `saved_model.pb` last. This test replays that order with the same TFX
function and stops it at each point a SIGKILL could (empty folder, part of the variables,
everything but saved_model.pb, saved_model.pb cut short), polling the real server each time.
"""
from __future__ import annotations

import os
import shutil

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)


def served_version(server, image) -> int:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sicot"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto([image]))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    assert tf.make_ndarray(response.outputs["scores"]).shape[0] == 1
    return response.model_spec.version.value


def states(server) -> dict[int, tuple[str, int]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "sicot"
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, 30)
    name = get_model_status_pb2.ModelVersionStatus.State.Name
    return {s.version: (name(s.state), s.status.error_code) for s in response.model_version_status}


def test_a_push_killed_at_any_point_is_never_served(tmp_path, fixture_saved_models, push_version,
                                                    server_factory, images):
    from tfx.utils import io_utils

    base = str(tmp_path / "serving")
    push_version(fixture_saved_models[0], base, 1)
    server = server_factory(base, poll_seconds=0)  # polled by hand below
    image = images["red_jpeg"]
    assert served_version(server, image) == 1

    source = fixture_saved_models[1]
    dest = os.path.join(base, "2")
    variables = sorted(os.listdir(os.path.join(source, "variables")))
    assert len(variables) >= 2
    with open(os.path.join(source, "saved_model.pb"), "rb") as f:
        graph = f.read()

    def after_kill(stage):
        server.manager.poll_once()
        assert server.manager.loaded_versions() == [1], stage
        assert served_version(server, image) == 1, stage
        assert states(server).get(2, ("",))[0] != "AVAILABLE", stage

    # killed right after creating the version folder
    os.makedirs(dest)
    after_kill("empty folder")
    # killed half way through the variables
    os.makedirs(os.path.join(dest, "variables"))
    shutil.copy(os.path.join(source, "variables", variables[0]), os.path.join(dest, "variables"))
    after_kill("part of the variables")
    # killed after everything but saved_model.pb (the Pusher's first step, with TFX's own copy)
    shutil.rmtree(dest)
    io_utils.copy_dir(source, dest, deny_regex_patterns=[r"saved_model\.pb"])
    assert not os.path.exists(os.path.join(dest, "saved_model.pb"))
    after_kill("all but saved_model.pb")
    # killed while saved_model.pb was being written: the load fails, version 1 keeps serving,
    # and the failure is reported (END with an error) instead of being hidden
    for cut in (0, 1, len(graph) // 2, len(graph) - 1):
        with open(os.path.join(dest, "saved_model.pb"), "wb") as f:
            f.write(graph[:cut])
        after_kill(f"saved_model.pb cut at {cut} of {len(graph)} bytes")
        state, code = states(server)[2]
        assert state == "END" and code != 0, (cut, state, code)

    # the push completes (the re-run's Pusher writes the whole file): version 2 is served
    with open(os.path.join(dest, "saved_model.pb"), "wb") as f:
        f.write(graph)
    server.manager.poll_once()
    assert server.manager.loaded_versions() == [2]
    assert served_version(server, image) == 2
    assert states(server)[2] == ("AVAILABLE", 0)
