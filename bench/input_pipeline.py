"""Input pipeline vs training step: is the trainer's tf.data input ever the bottleneck?

    .venv/bin/python bench/input_pipeline.py --out runs/input_pipeline.json
    .venv/bin/python bench/input_pipeline.py --configs small64 --batches 40 --steps 10

For each configuration, in one run:
  data          `sicot synth` (JPEG/PNG of --source-size px) + `sicot import` + the pipeline's
                Transform (`transform_local.run_transform`) at the model's image size; not timed.
                Reported: mean bytes of the source image, mean bytes of one transformed example
                (serialized tf.Example) and bytes on disk per example (GZIP TFRecords); and
                `before_*`: the same examples with the previous image format (int64 [S, S, 3]
                of the same decode + resize; on disk estimated with zlib per image feature).
  input_only    the trainer's own `make_dataset` (training=True, augment on), iterated without a
                model: images/s, and CPU seconds per image of this process (so the cores needed
                at a given rate do not depend on how many cores were free during the run).
  step_only     the trainer's `SICoTModel` (`build_model`, preset `sicot`) and optimizer, `fit`
                on one batch held in memory (`Dataset.from_tensors(batch).repeat()`): the
                training step without input cost, images/s.
Configurations: `small64` = the small tower at 64 px, `resnet50_224` = ResNet-50 at 224 px.
`cores_per_gpu` = CPU seconds per image x images/s of a GPU running plain ResNet-50 (3,000
and 5,500 img/s, the measured range quoted in issue 17): cores the input needs to keep up.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import sys
import tempfile
import time

CONFIGS = {
    "small64": {"backbone": "small", "image_size": 64, "batch_size": 64},
    "resnet50_224": {"backbone": "resnet50", "image_size": 224, "batch_size": 16},
}
GPU_RATES = (3000, 5500)


def make_data(work: str, image_size: int, source_size: int, classes: int, per_class: int) -> dict:
    from sicot.data.importer import ImportConfig, import_dataset
    from sicot.data.synth import SynthConfig, generate
    from sicot.trainer.transform.preprocessing import TransformConfig
    from sicot.trainer.transform.run_local import run_transform

    data = os.path.join(work, "data")
    if not os.path.isdir(data):
        generate(SynthConfig(classes=classes, max_per_class=per_class, imbalance=2, eval_per_class=1,
                             test_per_class=1, image_size=source_size), data, progress=False,
                 log=lambda *a: None)
    examples = os.path.join(work, "examples")
    if not os.path.isdir(examples):
        import_dataset(data, examples, ImportConfig(), log=lambda *a: None, progress=False)
    out = os.path.join(work, f"transform_{image_size}")
    result = run_transform(examples, out, TransformConfig(image_size=image_size), splits=("train",))
    return {"examples": examples, "transform_output": result.transform_output_dir,
            "train_files": result.transformed_files["train"]}


def record_bytes(pattern: str, compression: str | None) -> tuple[int, float]:
    """(records, mean serialized bytes per record) of TFRecords matching `pattern`."""
    import tensorflow as tf

    sizes = [len(r.numpy()) for f in sorted(glob.glob(pattern))
             for r in tf.data.TFRecordDataset(f, compression_type=compression)]
    return len(sizes), (sum(sizes) / len(sizes) if sizes else 0.0)


def source_image_bytes(examples_dir: str) -> float:
    import tensorflow as tf

    sizes = [len(tf.train.Example.FromString(r.numpy()).features.feature["image"].bytes_list.value[0])
             for f in sorted(glob.glob(os.path.join(examples_dir, "train-*.tfrecord.gz")))
             for r in tf.data.TFRecordDataset(f, compression_type="GZIP")]
    return sum(sizes) / len(sizes)


def pixels_format_bytes(data: dict, image_size: int, limit: int = 500) -> tuple[float, float]:
    """(mean serialized bytes, mean zlib-compressed bytes) of the image feature in the previous
    format (int64 [S, S, 3], the same decode + resize), against the JPEG feature now stored,
    over up to `limit` source images."""
    import zlib

    import tensorflow as tf

    from sicot.trainer.transform import images

    old, new = [], []
    for f in sorted(glob.glob(os.path.join(data["examples"], "train-*.tfrecord.gz"))):
        for r in tf.data.TFRecordDataset(f, compression_type="GZIP").take(limit - len(old)):
            source = tf.train.Example.FromString(r.numpy()).features.feature["image"].bytes_list.value[0]
            pixels = images.model_image(tf.constant(source), image_size).numpy().astype("int64")
            old.append(tf.train.Feature(int64_list=tf.train.Int64List(value=pixels.reshape(-1)))
                       .SerializeToString())
            stored = images.store_images(tf.constant([source]), images.stored_side(image_size))[0]
            new.append(tf.train.Feature(bytes_list=tf.train.BytesList(value=[stored.numpy()]))
                       .SerializeToString())
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return (mean([len(o) for o in old]) - mean([len(n) for n in new]),
            mean([len(zlib.compress(o)) for o in old]) - mean([len(zlib.compress(n)) for n in new]))


def sizes_report(data: dict, image_size: int) -> dict:
    n, serialized = record_bytes(data["train_files"], "GZIP")
    on_disk = sum(os.path.getsize(f) for f in glob.glob(data["train_files"]))
    source = source_image_bytes(data["examples"])
    extra, extra_compressed = pixels_format_bytes(data, image_size)
    before = serialized + extra
    return {"examples": n, "source_image_bytes": round(source, 1),
            "transformed_example_bytes": round(serialized, 1),
            "transformed_on_disk_gzip_bytes": round(on_disk / n, 1),
            "transformed_over_source": round(serialized / source, 2),
            "on_disk_over_source": round(on_disk / n / source, 2),
            # The same examples with the previous int64 [S, S, 3] image feature.
            "before_pixels_example_bytes": round(before, 1),
            "before_pixels_on_disk_gzip_bytes_estimate": round(on_disk / n + extra_compressed, 1),
            "before_pixels_over_source": round(before / source, 2)}


def time_input(data: dict, batch_size: int, batches: int) -> dict:
    import tensorflow_transform as tft

    from sicot.trainer.input import make_dataset

    output = tft.TFTransformOutput(data["transform_output"])
    ds = make_dataset(data["train_files"], output, batch_size, training=True, augment=True, seed=0)
    it = iter(ds)
    for _ in range(3):  # warm-up: autotune, shuffle buffer fill
        next(it)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = batches * batch_size
    return {"batches": batches, "images_per_s": round(images / wall, 1),
            "cpu_s_per_image": round(cpu / images, 6),
            "cpu_cores_busy": round(cpu / wall, 2)}


def time_step(data: dict, cfg: dict, steps: int) -> dict:
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from sicot.trainer.input import make_dataset
    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.task import make_optimizer
    from sicot.trainer.transform.output import model_shapes, read_class_counts

    output = tft.TFTransformOutput(data["transform_output"])
    names, counts = read_class_counts(output)
    image_size, max_tokens, vocab_size = model_shapes(output)
    config = ModelConfig.from_dict({"model_type": "sicot", "backbone": cfg["backbone"],
                                    "batch_size": cfg["batch_size"]})
    batch = next(iter(make_dataset(data["train_files"], output, cfg["batch_size"], training=True,
                                   augment=True, seed=0)))
    keras.utils.set_random_seed(0)
    model = build_model(config, len(names), vocab_size, counts, max_tokens, image_size)
    model.compile(optimizer=make_optimizer(config, 1000, sampled=model.sampled))
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)  # traces the train function
    wall = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
    wall = time.perf_counter() - wall
    return {"steps": steps, "batch_size": cfg["batch_size"], "seconds_per_step": round(wall / steps, 4),
            "images_per_s": round(steps * cfg["batch_size"] / wall, 1),
            "parameters": int(model.count_params())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="small64,resnet50_224",
                   help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--batches", type=int, default=40, help="input-only batches timed")
    p.add_argument("--steps", type=int, default=10, help="training steps timed (small64)")
    p.add_argument("--resnet-steps", type=int, default=3, help="training steps timed (resnet50_224)")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--per-class", type=int, default=20, help="most training images of a class")
    p.add_argument("--source-size", type=int, default=256, help="side of the generated source images")
    p.add_argument("--work", help="keep generated data here (reused when present)")
    p.add_argument("--out", help="also write the JSON document to this file")
    args = p.parse_args(argv)
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        p.error(f"--configs: unknown {unknown}; known: {sorted(CONFIGS)}")

    work = args.work or tempfile.mkdtemp(prefix="sicot_input_bench_")
    os.makedirs(work, exist_ok=True)
    load_before = os.getloadavg()[0]
    results = {}
    try:
        for name in names:
            cfg = CONFIGS[name]
            data = make_data(work, cfg["image_size"], args.source_size, args.classes, args.per_class)
            entry = {"bytes": sizes_report(data, cfg["image_size"]),
                     "input_only": time_input(data, cfg["batch_size"], args.batches),
                     "step_only": time_step(data, cfg, args.steps if name == "small64" else args.resnet_steps)}
            entry["input_over_step"] = round(entry["input_only"]["images_per_s"]
                                             / entry["step_only"]["images_per_s"], 2)
            entry["cores_per_gpu"] = {str(rate): round(rate * entry["input_only"]["cpu_s_per_image"], 1)
                                      for rate in GPU_RATES}
            results[name] = entry
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps({"config": vars(args),
                       "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                       "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                       "results": results}, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
