"""GPU training throughput with the JAX backend (no TensorFlow needed): SICoT vs plain ResNet-50,
and the dense vs the sampled classifier head at a million classes. Prints one JSON document.

On the accelerator machine (its image has JAX but not Keras; carry the wheels, see
docs/benchmarks.md "GPU"):

    KERAS_BACKEND=jax python3 bench/gpu_benchmark.py --out $OUT/gpu.json

Check on CPU with tiny sizes (a separate venv with jax + keras==3.12.4, no TensorFlow):

    KERAS_BACKEND=jax VENV/bin/python bench/gpu_benchmark.py --image-size 32 --batch 4 \
        --steps 2 --warmup 1 --classes 50 --head-classes 2000 --head-batch 8 --dtype float32

Parts, each timed after `--warmup` steps (compilation) over `--steps` steps, on device-resident
random data (so no input pipeline is measured; bench/input_pipeline.py covers that):
  sicot_resnet50        the trainer's SICoTModel (`build_model`, preset `sicot`, backbone
                        resnet50, text branch with `--tokens` tokens) with run_fn's optimizer;
  keras_resnet50        plain `keras.applications.ResNet50(weights=None)` + softmax
                        cross-entropy, AdamW; the same images, batch and dtype policy;
  sicot_efficientnet_lite0  (part `efficientnet`) the same SICoTModel on the efficientnet_lite0
                        tower, fully fine-tuned (every backbone weight trainable, BN statistics
                        frozen as `pretrained_bn` does by default): the production setting of
                        the pretrained tower on a GPU;
  head_dense/_sampled   the trainer's logit-adjusted visual-only model with `--head-classes`
                        classes, dense `ClassifierHead` + AdamW against `SampledClassifierHead`
                        (negative share `--negative-share`) + SparseCentreAdamW.
Images/s = batch x steps / seconds; ratios are SICoT / plain and sampled / dense.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types


def _import_sicot():
    """`sicot.trainer` from this checkout when the package is not installed (the GPU machine
    gets the working tree, not a pip install): the same folder mapping as setup.py."""
    try:
        import sicot.trainer  # noqa: F401
        return
    except ImportError:
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package = types.ModuleType("sicot")
    package.__path__ = [os.path.join(root, "sicot"), root]  # sicot.data, sicot.trainer, ...
    sys.modules["sicot"] = package


def _time_steps(step, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def _train_step_fn(model, x, y):
    """One optimizer step on device-resident (x, y); synchronised by reading the loss."""
    def step():
        logs = model.train_on_batch(x, y, return_dict=True)
        return float(logs["loss"])
    return step


def _device_array(array):
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.device_put(array)
    return keras.ops.convert_to_tensor(array)


def sicot_vs_resnet(args) -> dict:
    import keras
    import numpy as np

    from sicot.contract import IMAGE_INPUT, TOKENS_INPUT
    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.task import make_optimizer

    rng = np.random.default_rng(0)
    s, b, c = args.image_size, args.batch, args.classes
    images = _device_array(rng.uniform(0, 255, (b, s, s, 3)).astype("float32"))
    tokens = _device_array(rng.integers(2, args.vocab, (b, args.tokens)).astype("int32"))
    labels = _device_array(rng.integers(0, c, (b,)).astype("int32"))
    counts = np.maximum(1, (1000 / np.arange(1, c + 1) ** 1.0).astype(int)).tolist()
    results = {}

    config = ModelConfig.preset("sicot").replace(backbone="resnet50", batch_size=b, augment=False)
    model = build_model(config, c, args.vocab, counts, args.tokens, s)
    model.compile(optimizer=make_optimizer(config, 1000, sampled=model.sampled))
    seconds = _time_steps(_train_step_fn(model, {IMAGE_INPUT: images, TOKENS_INPUT: tokens}, labels),
                          args.warmup, args.steps)
    results["sicot_resnet50"] = {"images_per_s": round(b * args.steps / seconds, 1),
                                 "seconds_per_step": round(seconds / args.steps, 4),
                                 "parameters": int(model.count_params())}
    del model
    keras.backend.clear_session()

    plain = keras.applications.ResNet50(weights=None, input_shape=(s, s, 3), classes=c,
                                        classifier_activation=None)
    plain.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scaled = images / 127.5 - 1.0  # SICoT scales inside its tower; same work either way
    seconds = _time_steps(_train_step_fn(plain, scaled, labels), args.warmup, args.steps)
    results["keras_resnet50"] = {"images_per_s": round(b * args.steps / seconds, 1),
                                 "seconds_per_step": round(seconds / args.steps, 4),
                                 "parameters": int(plain.count_params())}
    del plain
    keras.backend.clear_session()
    results["sicot_over_plain"] = round(results["sicot_resnet50"]["images_per_s"]
                                        / results["keras_resnet50"]["images_per_s"], 3)
    return results


def sicot_efficientnet(args) -> dict:
    import keras
    import numpy as np

    from sicot.contract import IMAGE_INPUT, TOKENS_INPUT
    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.task import make_optimizer

    rng = np.random.default_rng(2)
    s, b, c = args.image_size, args.batch, args.classes
    images = _device_array(rng.uniform(0, 255, (b, s, s, 3)).astype("float32"))
    tokens = _device_array(rng.integers(2, args.vocab, (b, args.tokens)).astype("int32"))
    labels = _device_array(rng.integers(0, c, (b,)).astype("int32"))
    counts = np.maximum(1, (1000 / np.arange(1, c + 1) ** 1.0).astype(int)).tolist()
    config = ModelConfig.preset("sicot").replace(backbone="efficientnet_lite0", batch_size=b,
                                                 augment=False)
    model = build_model(config, c, args.vocab, counts, args.tokens, s)
    model.compile(optimizer=make_optimizer(config, 1000, sampled=model.sampled))
    seconds = _time_steps(_train_step_fn(model, {IMAGE_INPUT: images, TOKENS_INPUT: tokens},
                                         labels), args.warmup, args.steps)
    result = {"sicot_efficientnet_lite0": {"images_per_s": round(b * args.steps / seconds, 1),
                                           "seconds_per_step": round(seconds / args.steps, 4),
                                           "parameters": int(model.count_params())}}
    del model
    keras.backend.clear_session()
    return result


def dense_vs_sampled(args) -> dict:
    import keras
    import numpy as np

    from sicot.contract import IMAGE_INPUT
    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.task import make_optimizer

    rng = np.random.default_rng(1)
    c, b, s = args.head_classes, args.head_batch, args.head_image_size
    images = _device_array(rng.uniform(0, 255, (b, s, s, 3)).astype("float32"))
    labels = _device_array(rng.integers(0, c, (b,)).astype("int32"))
    counts = np.maximum(1, (200 / np.arange(1, c + 1) ** 0.5).astype(int)).tolist()
    results = {}
    for head in ("dense", "sampled"):
        config = ModelConfig.preset("logit_adjust").replace(
            batch_size=b, negative_share=args.negative_share, augment=False,
            sampled_classifier_min_classes=(2 * c if head == "dense" else min(c, 2)))
        model = build_model(config, c, vocab_size=2, class_counts=counts, max_tokens=1,
                            image_size=s)
        assert model.sampled == (head == "sampled")
        model.compile(optimizer=make_optimizer(config, 1000, sampled=model.sampled))
        try:
            seconds = _time_steps(_train_step_fn(model, {IMAGE_INPUT: images}, labels),
                                  args.warmup, args.steps)
            results[f"head_{head}"] = {"images_per_s": round(b * args.steps / seconds, 1),
                                       "seconds_per_step": round(seconds / args.steps, 4)}
        except Exception as e:  # out of memory at 1M dense is a result, not a crash
            results[f"head_{head}"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        del model
        keras.backend.clear_session()
    if all("images_per_s" in results[f"head_{h}"] for h in ("dense", "sampled")):
        results["sampled_over_dense"] = round(results["head_sampled"]["images_per_s"]
                                              / results["head_dense"]["images_per_s"], 3)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--classes", type=int, default=1000, help="classes of the ResNet-50 comparison")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--vocab", type=int, default=20000)
    p.add_argument("--dtype", default="mixed_bfloat16", help="Keras dtype policy (float32 on CPU)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--head-classes", type=int, default=1_000_000)
    p.add_argument("--head-batch", type=int, default=256)
    p.add_argument("--head-image-size", type=int, default=64)
    p.add_argument("--negative-share", type=float, default=0.1)
    p.add_argument("--parts", default="resnet,efficientnet,head",
                   help="comma-separated: resnet, efficientnet, head")
    p.add_argument("--out", help="also write the JSON document to this file")
    args = p.parse_args(argv)

    import keras

    _import_sicot()
    keras.config.set_dtype_policy(args.dtype)
    device = "cpu"
    if keras.backend.backend() == "jax":
        import jax

        device = ", ".join(str(d) for d in jax.devices())
    results = {}
    parts = [part for part in args.parts.split(",") if part]
    if "resnet" in parts:
        results.update(sicot_vs_resnet(args))
    if "efficientnet" in parts:
        results.update(sicot_efficientnet(args))
    if "head" in parts:
        results.update(dense_vs_sampled(args))
    text = json.dumps({"config": vars(args), "backend": keras.backend.backend(),
                       "keras": keras.__version__, "devices": device,
                       "python": platform.python_version(), "results": results}, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
