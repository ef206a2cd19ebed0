"""`sicot demo`: the README's main job, end to end on the embedded synthetic dataset.

Runs the same commands a user would type, printing each before it runs:
  1. sicot synth     generate the default long-tailed product dataset
  2. sicot run       the local TFX pipeline (ExampleGen .. Evaluator .. Pusher)
  3. sicot serve     a TF Serving-protocol server on loopback over the pushed model
  4. sicot predict   one shopper query (image only) over gRPC, then one with the title
The evaluation by many/medium/few band is printed by `sicot run` from the Evaluator output.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time

from sicot.errors import UserError

# 20 epochs: at 6 the model is far from trained (docs/experiments.md, round 3); on 2 cores the
# whole demo then takes about 5 minutes.
DEMO_EPOCHS = 20


def register(subparsers):
    p = subparsers.add_parser(
        "demo", help="generate data, run the TFX pipeline, serve the pushed model, predict")
    p.add_argument("--workdir", default="runs/demo",
                   help="where data, pipeline artifacts and the served model go (default runs/demo)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (synth default)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                   help=f"training epochs (default {DEMO_EPOCHS}: the demo's time budget on 2 cores)")
    p.add_argument("--model", default="sicot", help="model to train (default sicot)")
    p.add_argument("--fresh", action="store_true",
                   help="delete WORKDIR first (otherwise unchanged pipeline steps are cached)")
    p.set_defaults(handler=run_demo)


# TensorFlow's C++ start-up notes (no CUDA here, CPU flags) and Google client libraries'
# Python-version notices bury the output a user came for; errors still print.
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore::FutureWarning"}


def _env() -> dict:
    return {**_QUIET_ENV, **os.environ}


def _sicot(*args: str) -> None:
    cmd = [sys.executable, "-m", "sicot.cli", *args]
    print("\n$ sicot " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(cmd, check=True, env=_env())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sicot serve exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"sicot serve did not open port {port} within {timeout:.0f}s")


def _first_test_record(data_dir: str) -> dict:
    with open(os.path.join(data_dir, "test.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("title"):
                return rec
    raise RuntimeError(f"{data_dir}/test.jsonl has no record with a title")


def run_demo(args) -> int:
    import shutil

    workdir = os.path.abspath(args.workdir)
    if args.fresh and os.path.isdir(workdir):
        shutil.rmtree(workdir)
    data_dir = os.path.join(workdir, "data")
    pipeline_root = os.path.join(workdir, "pipeline")
    serving_dir = os.path.join(workdir, "serving", "sicot")
    started = time.monotonic()

    if not os.path.exists(os.path.join(data_dir, "dataset.json")):
        synth = ["synth", "--out", data_dir]
        if args.classes:
            synth += ["--classes", str(args.classes)]
        _sicot(*synth)
    else:
        print(f"\n(dataset already in {data_dir}; --fresh regenerates it)")

    run = ["run", "--data", data_dir, "--pipeline-root", pipeline_root,
           "--serving-dir", serving_dir, "--model", args.model]
    if args.epochs:
        run += ["--epochs", str(args.epochs)]
    _sicot(*run)

    versions = sorted((d for d in os.listdir(serving_dir) if d.isdigit()), key=int) \
        if os.path.isdir(serving_dir) else []
    if not versions:
        raise UserError(f"the pipeline pushed no model to {serving_dir} (not blessed?); "
                        "see the Evaluator output above")

    record = _first_test_record(data_dir)
    image = record["image"] if os.path.isabs(record["image"]) \
        else os.path.join(data_dir, record["image"])
    tags = record.get("tags") or []
    tags = "|".join(tags) if isinstance(tags, list) else str(tags)

    grpc_port, rest_port = _free_port(), _free_port()
    serve = [sys.executable, "-m", "sicot.cli", "serve", "--model-base-path", serving_dir,
             "--model-name", "sicot", "--grpc-port", str(grpc_port),
             "--rest-port", str(rest_port)]
    print(f"\n$ sicot serve --model-base-path {serving_dir} --model-name sicot "
          f"--grpc-port {grpc_port} --rest-port {rest_port} &", flush=True)
    server = subprocess.Popen(serve, env=_env())
    try:
        _wait_for_port(grpc_port, server)
        print(f"\nQuery: {record['image']}  (true class {record['label']})")
        _sicot("predict", "--server", f"127.0.0.1:{grpc_port}", "--model-name", "sicot",
               "--image", image)
        _sicot("predict", "--server", f"127.0.0.1:{rest_port}", "--rest",
               "--model-name", "sicot", "--image", image,
               "--title", record.get("title", ""), "--tags", tags)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"\nDemo finished in {time.monotonic() - started:.0f}s. Artifacts: {workdir}")
    return 0
