"""`sicot demo`: the README's main job, end to end on the embedded synthetic dataset.

Runs the same commands a user would type, printing each before it runs:
  1. sicot synth     generate the default long-tailed product dataset
  2. sicot run       the local TFX pipeline (ExampleGen .. Evaluator .. Pusher); it prints the
                     Evaluator's accuracy by many/medium/few band
  3. sicot evaluate  every test image through the pushed model, one answer per image
  4. sicot serve     a TF Serving-protocol server on loopback over the pushed model
  5. sicot predict   two shopper queries picked from step 3 (a many-shot and a few-shot
                     class), each from the photo alone (gRPC) and with its title (REST);
                     every answer is marked right or wrong against the true class
TensorFlow and library messages go to WORKDIR/logs/sicot-demo.log (`--verbose` shows them).
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time

from sicot import console, contract
from sicot.errors import UserError

# 20 epochs: at 6 the model is far from trained (docs/experiments.md, round 3).
DEMO_EPOCHS = 20
# --quick: a small dataset and one epoch, a smoke test of the whole demo (tests/test_demo.py).
# The bands are scaled to its counts (150 training images down to 3).
QUICK_SYNTH = ["--classes", "10", "--max-per-class", "150", "--imbalance", "50",
               "--eval-per-class", "1", "--test-per-class", "3", "--image-size", "32"]
QUICK_RUN = ["--epochs", "1", "--image-size", "32", "--band-edges", "10,60"]


def register(subparsers):
    p = subparsers.add_parser(
        "demo", help="generate data, run the TFX pipeline, serve the pushed model, predict")
    p.add_argument("--workdir", default="runs/demo",
                   help="where data, pipeline artifacts and the served model go (default runs/demo)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (synth default)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                   help=f"training epochs (default {DEMO_EPOCHS})")
    p.add_argument("--model", default="sicot", help="model to train (default sicot)")
    p.add_argument("--quick", action="store_true",
                   help="a small dataset (10 classes, 32 px) and one epoch: a smoke test")
    p.add_argument("--fresh", action="store_true",
                   help="delete WORKDIR first (otherwise unchanged pipeline steps are cached)")
    p.set_defaults(handler=run_demo)


_CHILD_FLAGS: list[str] = []  # ["--verbose"] under `sicot demo --verbose`


def _show(args) -> None:
    print("\n$ sicot " + " ".join(shlex.quote(a) for a in args), flush=True)


def _sicot(*args: str, capture: bool = False) -> str:
    """Runs `sicot ARGS` as a user would; its progress bars and errors go to the terminal,
    its library messages to the demo's log (the child inherits SICOT_LOG_FILE)."""
    _show(args)
    done = subprocess.run([sys.executable, "-m", "sicot.cli", *args, *_CHILD_FLAGS], check=False,
                          stderr=console.stream(), text=True,
                          stdout=subprocess.PIPE if capture else None)
    if done.returncode != 0:
        raise UserError(f"`sicot {args[0]}` exited with {done.returncode}; see the messages "
                        f"above and {os.environ.get(console.LOG_ENV, 'its output')}")
    return done.stdout or ""


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


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pick_queries(examples: list[dict]) -> list[tuple[dict, str]]:
    """(evaluation row, why it was picked): the first many-shot test image, and the first
    few-shot one that the title turns from a wrong answer into a right one (else the first
    few-shot one)."""
    picks = []
    many = [e for e in examples if e["band"] == contract.MANY]
    if many:
        picks.append((many[0], "the first test image of a many-shot class"))
    few = [e for e in examples if e["band"] == contract.FEW]
    helped = [e for e in few if e.get(contract.IMAGE_ONLY) != e["label"]
              and e.get(contract.IMAGE_TEXT) == e["label"]]
    if helped:
        picks.append((helped[0], "the first test image of a few-shot class that the photo alone "
                                 "gets wrong and the photo with its title gets right"))
    elif few:
        picks.append((few[0], "the first test image of a few-shot class (no few-shot image "
                              "was wrong from the photo and right with the title)"))
    return picks


def _describe(label: str, classes: dict[str, dict]) -> str:
    info = classes.get(label) or {}
    return f"{label} \"{info['name']}\"" if info.get("name") else label


def _answer(output: str, truth: str, classes: dict[str, dict]) -> tuple[str, bool]:
    top = json.loads(output)["top_k"][0]
    right = top["class"] == truth
    line = f"{_describe(top['class'], classes)}  score {top['score']:.2f}  "
    return line + ("RIGHT" if right else f"WRONG (true class {_describe(truth, classes)})"), right


def run_demo(args) -> int:
    import shutil

    _CHILD_FLAGS[:] = ["--verbose"] if args.verbose else []
    workdir = os.path.abspath(args.workdir)
    if args.fresh and os.path.isdir(workdir):
        for entry in os.listdir(workdir):  # all but logs/, where this run's log already is
            if entry != console.LOG_FOLDER:
                path = os.path.join(workdir, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    data_dir = os.path.join(workdir, "data")
    pipeline_root = os.path.join(workdir, "pipeline")
    serving_dir = os.path.join(workdir, "serving", "sicot")
    started = time.monotonic()

    if not os.path.exists(os.path.join(data_dir, "dataset.json")):
        synth = ["synth", "--out", data_dir] + (QUICK_SYNTH if args.quick else [])
        if args.classes:
            synth += ["--classes", str(args.classes)]
        _sicot(*synth)
    else:
        print(f"\n(dataset already in {data_dir}; --fresh regenerates it)")

    run = ["run", "--data", data_dir, "--pipeline-root", pipeline_root,
           "--serving-dir", serving_dir, "--model", args.model]
    run += QUICK_RUN if args.quick else ["--epochs", str(args.epochs)]
    _sicot(*run)

    versions = sorted((d for d in os.listdir(serving_dir) if d.isdigit()), key=int) \
        if os.path.isdir(serving_dir) else []
    if not versions:
        raise UserError(f"the pipeline pushed no model to {serving_dir} (not blessed?); "
                        "see the Evaluator output above")

    evaluation = os.path.join(workdir, "evaluation.json")
    _sicot("evaluate", "--model", serving_dir, "--data", data_dir, "--json", evaluation)
    with open(evaluation) as f:
        report = json.load(f)
    classes_file = os.path.join(data_dir, "classes.jsonl")
    classes = ({c["label"]: c for c in _read_jsonl(classes_file)}
               if os.path.isfile(classes_file) else {})
    test_records = _read_jsonl(os.path.join(data_dir, "test.jsonl"))
    picks = pick_queries(report["examples"])
    if not picks:
        raise UserError(f"{evaluation}: no many-shot or few-shot test image to query with")

    grpc_port, rest_port = _free_port(), _free_port()
    serve = [sys.executable, "-m", "sicot.cli", "serve", "--model-base-path", serving_dir,
             "--model-name", "sicot", "--grpc-port", str(grpc_port),
             "--rest-port", str(rest_port)]
    print(f"\n$ sicot serve --model-base-path {serving_dir} --model-name sicot "
          f"--grpc-port {grpc_port} --rest-port {rest_port} &", flush=True)
    server = subprocess.Popen(serve)  # its log goes to the demo's log file (descriptor 2)
    marks = []
    try:
        _wait_for_port(grpc_port, server)
        for number, (row, why) in enumerate(picks, 1):
            # record_id is '<manifest file>:<line number>' (1-based)
            record = test_records[int(row["record_id"].rpartition(":")[2]) - 1]
            truth = record[contract.LABEL_KEY]
            train_count = (classes.get(truth) or {}).get("train_count")
            image = record[contract.IMAGE_KEY]
            path = image if os.path.isabs(image) else os.path.join(data_dir, image)
            tags = record.get(contract.TAGS_KEY) or []
            tags = contract.TAG_SEPARATOR.join(tags) if isinstance(tags, list) else str(tags)
            print(f"\nQuery {number}: {image}, a photo of {_describe(truth, classes)} "
                  f"({row['band']}-shot class"
                  + (f", {train_count} training images" if train_count is not None else "")
                  + f"); picked from `sicot evaluate` as {why}.")
            common = ["--model-name", "sicot", "--image", path, "--json"]
            photo = _sicot("predict", "--server", f"127.0.0.1:{grpc_port}", *common,
                           capture=True)
            line, right = _answer(photo, truth, classes)
            print(f"  photo only (gRPC):      {line}")
            marks.append(right)
            title = record.get(contract.TITLE_KEY) or ""
            with_title = _sicot("predict", "--server", f"127.0.0.1:{rest_port}", "--rest",
                                *common, "--title", title, "--tags", tags, capture=True)
            line, right = _answer(with_title, truth, classes)
            print(f"  photo + title (REST):   {line}")
            marks.append(right)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    overall = report["results"][contract.IMAGE_ONLY][contract.OVERALL]["top1"]
    print(f"\n{sum(marks)} of {len(marks)} answers right; on the whole test split the photo "
          f"alone is right {100 * overall:.1f}% of the time (`sicot evaluate` above).")
    print(f"Demo finished in {time.monotonic() - started:.0f}s. Artifacts: {workdir}")
    return 0
