"""`sicot serve` (local TF Serving protocol server) and `sicot predict` (its client)."""
from __future__ import annotations

import argparse
import os
import re

from sicot import console, contract
from sicot.errors import UserError

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_BATCHING_KEYS = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                  "num_batch_threads", "allowed_batch_sizes", "pad_variable_length_inputs"}


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve a model base path with the TensorFlow Serving protocol (gRPC + REST)",
        description="Serve the latest version under --model-base-path (TF Serving layout "
                    "DIR/<integer version>/saved_model.pb) over gRPC (PredictionService, "
                    "ModelService) and REST (/v1/models/NAME:predict), polling for new versions.")
    serve.add_argument("--model-base-path", required=True, help="directory of integer version dirs")
    serve.add_argument("--model-name", required=True, help="name clients use, e.g. sicot")
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to bind (default loopback; 0.0.0.0 exposes the server)")
    serve.add_argument("--grpc-port", type=int, default=8500)
    serve.add_argument("--rest-port", type=int, default=8501, help="REST port; -1 disables REST")
    serve.add_argument("--poll-seconds", type=float, default=2.0,
                       help="how often to look for new versions (0: only at start)")
    serve.add_argument("--enable-batching", action="store_true",
                       help="merge concurrent requests for one signature into one call")
    serve.add_argument("--max-batch-size", type=int, default=None, help="default 32")
    serve.add_argument("--batch-timeout-micros", type=int, default=None, help="default 2000")
    serve.add_argument("--max-enqueued-batches", type=int, default=None, help="default 100")
    serve.add_argument("--num-batch-threads", type=int, default=None,
                       help="batches of one signature run at the same time (default 1)")
    serve.add_argument("--allowed-batch-sizes", type=_batch_sizes, default=None,
                       help="comma-separated batch sizes the model is called with, e.g. 4,8,16,32 "
                            "(merged batches are padded up; the last must equal --max-batch-size)")
    serve.add_argument("--batching-parameters-file", default=None,
                       help="TF Serving batching parameters (text proto); flags above override it")
    serve.add_argument("--max-request-bytes", type=int, default=None,
                       help="largest accepted request body / gRPC message (default 32 MiB)")
    serve.add_argument("--max-image-pixels", type=int, default=None,
                       help="refuse images whose header claims more than width x height pixels "
                            "(decompression bombs; default 40,000,000, as sicot import; 0: no limit)")
    serve.add_argument("--num-threads", type=int, default=32, help="request threads per front end")
    serve.add_argument("--tensorflow-intra-op-parallelism", type=int, default=0,
                       help="threads one TensorFlow op may use (0: TensorFlow's default, one per core)")
    serve.add_argument("--tensorflow-inter-op-parallelism", type=int, default=0,
                       help="TensorFlow ops run at the same time (0: TensorFlow's default)")
    serve.set_defaults(handler=run_serve)

    predict = subparsers.add_parser(
        "predict", help="ask a TF Serving protocol server for the product classes of an image",
        description="Send one image (and optional title/tags) to a server speaking the TensorFlow "
                    "Serving protocol and print the top-k classes with their scores.")
    predict.add_argument("--server", required=True, help="HOST:PORT (gRPC port, or REST port with --rest)")
    predict.add_argument("--image", required=True, help="JPEG/PNG/GIF/BMP file")
    predict.add_argument("--title", default=None)
    predict.add_argument("--tags", default=None, help="tags joined by '|'")
    predict.add_argument("--rest", action="store_true", help="use the REST API instead of gRPC")
    predict.add_argument("--model-name", default="sicot")
    predict.add_argument("--model-version", type=int, default=None, help="default: latest")
    predict.add_argument("--signature", default=None,
                         help=f"default: {contract.IMAGE_TEXT_SIGNATURE} with --title/--tags, "
                              f"else {contract.IMAGE_SIGNATURE}")
    predict.add_argument("--timeout", type=float, default=30.0, help="seconds")
    predict.add_argument("--json", action="store_true", help="print the result as JSON")
    predict.add_argument("--search", action="store_true",
                         help="visual search: the catalogue items most like the image (the "
                              f"model's {contract.SEARCH_IMAGE_SIGNATURE} / "
                              f"{contract.SEARCH_IMAGE_TEXT_SIGNATURE} signature, or --index)")
    predict.add_argument("--index", default=None, metavar="DIR",
                         help="with --search: a `sicot index` folder; the server gives the "
                              "image's embedding, the approximate index the items "
                              "(image-only)")
    predict.add_argument("--top-k", type=int, default=10, help="items with --index (default 10)")
    predict.set_defaults(handler=run_predict)


_WRAPPED_FIELD = re.compile(r"([A-Za-z_]+)\s*:?\s*\{\s*value\s*:\s*([^}\s]+)\s*\}")
_REPEATED_FIELD = re.compile(r"(allowed_batch_sizes)\s*:\s*([^\s{}]+)")


def read_batching_parameters(path: str) -> dict:
    """TF Serving's BatchingParameters text proto: the wrapped scalars (`name { value: N }`) and
    the repeated `allowed_batch_sizes: N` lines (returned as a list)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"--batching-parameters-file {path}: cannot read it ({e.strerror})")
    text = re.sub(r"#[^\n]*", "", text)
    entries = _WRAPPED_FIELD.findall(text) + _REPEATED_FIELD.findall(text)
    leftover = _REPEATED_FIELD.sub("", _WRAPPED_FIELD.sub("", text)).strip()
    if leftover:
        raise UserError(f"--batching-parameters-file {path}: cannot parse {leftover[:60]!r}; expected "
                        "lines like 'max_batch_size { value: 32 }' or 'allowed_batch_sizes: 8'")
    values: dict = {}
    for key, value in entries:
        if key not in _BATCHING_KEYS:
            raise UserError(f"--batching-parameters-file {path}: unknown field {key!r}; known: "
                            f"{', '.join(sorted(_BATCHING_KEYS))}")
        if key == "pad_variable_length_inputs":
            continue
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"--batching-parameters-file {path}: {key} must be an integer, got {value!r}")
        if key == "allowed_batch_sizes":
            values.setdefault(key, []).append(number)
        else:
            values[key] = number
    return values


_BATCH_FLAGS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
                "allowed_batch_sizes")


def _batch_sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def batching_options(args):
    from sicot.serving.batching import BatchingOptions

    has_batch_flags = args.batching_parameters_file is not None or any(
        getattr(args, key) is not None for key in _BATCH_FLAGS)
    if not args.enable_batching:
        if has_batch_flags:
            raise UserError("--max-batch-size/--batch-timeout-micros/--max-enqueued-batches/"
                            "--num-batch-threads/--allowed-batch-sizes/--batching-parameters-file "
                            "need --enable-batching")
        return None
    values = read_batching_parameters(args.batching_parameters_file) if args.batching_parameters_file else {}
    for key in _BATCH_FLAGS:
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if "allowed_batch_sizes" in values:
        values["allowed_batch_sizes"] = tuple(values["allowed_batch_sizes"])
    try:
        return BatchingOptions(**values)
    except ValueError as e:
        raise UserError(f"batching: {e}")


def server_options(args):
    from sicot.serving.server import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_REQUEST_BYTES, ServerOptions

    import tensorflow as tf

    base = args.model_base_path
    if not tf.io.gfile.isdir(base):  # a local folder or a URL (gs://...)
        raise UserError(f"--model-base-path {base}: no such directory (expected DIR/<version>/saved_model.pb)")
    if not _MODEL_NAME.match(args.model_name):
        raise UserError(f"--model-name {args.model_name!r}: use letters, digits, '_', '-', '.' only")
    for flag, port in (("--grpc-port", args.grpc_port), ("--rest-port", args.rest_port)):
        if not (0 <= port < 65536 or (flag == "--rest-port" and port == -1)):
            raise UserError(f"{flag} {port}: must be 0..65535")
    if args.grpc_port and args.grpc_port == args.rest_port:
        raise UserError(f"--grpc-port and --rest-port are both {args.grpc_port}")
    if args.poll_seconds < 0:
        raise UserError(f"--poll-seconds {args.poll_seconds}: must be >= 0")
    max_bytes = args.max_request_bytes if args.max_request_bytes is not None else DEFAULT_MAX_REQUEST_BYTES
    if max_bytes < 1024:
        raise UserError(f"--max-request-bytes {max_bytes}: must be at least 1024")
    max_pixels = DEFAULT_MAX_IMAGE_PIXELS if args.max_image_pixels is None else args.max_image_pixels
    if max_pixels < 0:
        raise UserError(f"--max-image-pixels {max_pixels}: must be >= 0 (0: no limit)")
    if args.num_threads < 1:
        raise UserError(f"--num-threads {args.num_threads}: must be >= 1")
    for flag, value in (("--tensorflow-intra-op-parallelism", args.tensorflow_intra_op_parallelism),
                        ("--tensorflow-inter-op-parallelism", args.tensorflow_inter_op_parallelism)):
        if value < 0:
            raise UserError(f"{flag} {value}: must be >= 0 (0: TensorFlow's default)")
    return ServerOptions(
        model_name=args.model_name, model_base_path=base, host=args.host, grpc_port=args.grpc_port,
        rest_port=None if args.rest_port == -1 else args.rest_port, poll_seconds=args.poll_seconds,
        batching=batching_options(args), max_request_bytes=max_bytes, num_threads=args.num_threads,
        max_image_pixels=max_pixels or None,
        intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        inter_op_parallelism=args.tensorflow_inter_op_parallelism)


def run_serve(args) -> int:
    import logging
    import signal
    import threading

    options = server_options(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sicot.serving.server import ModelServer

    server = ModelServer(options)
    try:
        server.start()
    except OSError as e:
        server.stop()
        raise UserError(f"cannot bind {options.host} (--grpc-port {options.grpc_port}, "
                        f"--rest-port {options.rest_port}): {e}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"sicot serve: model {options.model_name} versions {server.manager.loaded_versions()} "
          f"gRPC {options.host}:{server.grpc_port} REST {options.host}:{server.rest_port}", flush=True)
    stop.wait()
    print("sicot serve: shutting down", flush=True)
    server.stop()
    return 0


def run_predict(args) -> int:
    import json
    import sys

    from sicot.serving import client

    try:
        host, port = client.parse_server(args.server)
    except ValueError as e:
        raise UserError(str(e))
    try:
        with open(args.image, "rb") as f:
            image = f.read()
    except OSError as e:
        raise UserError(f"--image {args.image}: cannot read it ({e.strerror})")
    if client.image_format(image) is None:
        raise UserError(f"--image {args.image}: not a JPEG, PNG, GIF or BMP file")
    if args.index and not args.search:
        raise UserError("--index needs --search")
    if args.index and (args.title or args.tags):
        raise UserError("--index searches image-only: drop --title/--tags, or search the "
                        "model's own items (without --index) for image + text")
    if args.search and args.index:
        from sicot.data.search_index import AnnIndex

        index = AnnIndex.load(args.index)
        signature = args.signature or contract.IMAGE_SIGNATURE
    elif args.search:
        signature = args.signature or (contract.SEARCH_IMAGE_TEXT_SIGNATURE
                                       if (args.title or args.tags)
                                       else contract.SEARCH_IMAGE_SIGNATURE)
    else:
        signature = args.signature or client.default_signature(args.title, args.tags)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cls = client.RestClient if args.rest else client.GrpcClient
    conn = cls(address, args.model_name, timeout=args.timeout)
    try:
        try:
            names = conn.input_names(signature)
            try:
                inputs = client.build_inputs(names, image, args.title, args.tags)
            except ValueError as e:
                raise UserError(f"--signature {signature}: {e}")
            result = conn.predict(signature, inputs, version=args.model_version)
        except client.ClientError as e:
            print(f"sicot predict: error: {'REST' if args.rest else 'gRPC'} {address} answered "
                  f"{e.code}: {e.message}", file=console.stream())
            return 1
    finally:
        conn.close()
    if args.search:
        return _print_search(args, result, signature, address,
                             index if args.index else None)
    if contract.CLASSES_OUTPUT not in result.outputs or contract.SCORES_OUTPUT not in result.outputs:
        print(f"sicot predict: error: signature {signature} has no '{contract.CLASSES_OUTPUT}'/"
              f"'{contract.SCORES_OUTPUT}' outputs "
              f"(outputs: {sorted(result.outputs)})", file=console.stream())
        return 1
    top = result.top_k(0)
    if args.json:
        print(json.dumps({"model": args.model_name, "version": result.version, "signature": signature,
                          "top_k": [{"class": c, "score": s, "class_id": i} for c, s, i in top]}))
        return 0
    version = "latest" if result.version is None else result.version
    print(f"model {args.model_name} version {version} signature {signature} "
          f"({'REST' if args.rest else 'gRPC'} {address})")
    width = max(len(c) for c, _, _ in top)
    for rank, (name, score, class_id) in enumerate(top, 1):
        print(f"{rank:>3}. {name:<{width}}  {score:.4f}" + ("" if class_id is None else f"  (id {class_id})"))
    return 0


def _print_search(args, result, signature, address, index) -> int:
    """Prints the search hits of a search signature's answer, or of the index for the
    embedding a query signature answered."""
    import json
    import sys

    import numpy as np

    if index is not None:
        if contract.EMBEDDING_OUTPUT not in result.outputs:
            print(f"sicot predict: error: signature {signature} has no "
                  f"'{contract.EMBEDDING_OUTPUT}' output to search the index with",
                  file=sys.stderr)
            return 1
        embedding = np.asarray(result.outputs[contract.EMBEDDING_OUTPUT], np.float32)
        if embedding.shape[-1] != index.meta["dim"]:
            print(f"sicot predict: error: the model's embedding has {embedding.shape[-1]} "
                  f"values, the index {index.meta['dim']}: index built with another model?",
                  file=sys.stderr)
            return 1
        hits = index.hits(embedding[:1], args.top_k)[0]
        source = f"index {args.index} ({index.meta['kind']}, {len(index)} items)"
    else:
        names = (contract.ITEM_IDS_OUTPUT, contract.ITEM_LABELS_OUTPUT, contract.ITEM_SCORES_OUTPUT)
        if any(n not in result.outputs for n in names):
            print(f"sicot predict: error: signature {signature} is not a search signature "
                  f"(outputs: {sorted(result.outputs)}); does the model have catalogue items "
                  f"(sicot enroll)?", file=sys.stderr)
            return 1

        def text(v):
            return v.decode("utf-8") if isinstance(v, bytes) else str(v)

        ids, labels, scores = (result.outputs[n][0] for n in names)
        hits = [{"item_id": text(i), "label": text(l), "score": float(s)}
                for i, l, s in zip(ids, labels, scores)]
        source = f"signature {signature}"
    if args.json:
        print(json.dumps({"model": args.model_name, "version": result.version, "source": source,
                          "hits": hits}))
        return 0
    version = "latest" if result.version is None else result.version
    print(f"model {args.model_name} version {version} {source} "
          f"({'REST' if args.rest else 'gRPC'} {address})")
    width = max([len(h["item_id"]) for h in hits] + [4])
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}. {hit['item_id']:<{width}}  {hit['score']:.4f}  {hit['label']}")
    return 0
