"""Transform throughput (images/s): tf.Transform on Beam against plain Python loops, same data.

    .venv/bin/python bench/transform_throughput.py --examples EXAMPLES_DIR
    .venv/bin/python bench/transform_throughput.py --synth-classes 50 --image-size 64

EXAMPLES_DIR holds `<split>-*.tfrecord.gz` as written by `sicot import`; without it a
dataset is made with `sicot synth` + `sicot import` (not timed). Timed, in one run:
  transform_<mode>  `transform_local.run_transform` (the pipeline's preprocessing_fn: decode +
                    resize with pad, tensorflow-text tokens, vocabularies, label counts) over
                    all splits, DirectRunner in_memory (1 worker) and, with
                    --multi-processing, multi_processing with 2 workers; wall time includes
                    Beam start-up, the analysis pass and writing the transformed TFRecords
  pil_loop          read the same TFRecords, PIL decode -> RGB -> pad to square -> resize
                    (bilinear) -> numpy, one image at a time
  tf_eager_loop     the same with tf.io.decode_image + tf.image.resize_with_pad, eager
Only images are counted; the Python loops do no tokenising and write nothing, so they bound
what the decode alone costs. Prints JSON with images/s and the ratios to pil_loop.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import shutil
import sys
import tempfile
import time


def _records(examples_dir):
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_dir, "*.tfrecord.gz")))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        yield record.numpy()


def _image_bytes(examples_dir):
    import tensorflow as tf

    return [tf.train.Example.FromString(r).features.feature["image"].bytes_list.value[0]
            for r in _records(examples_dir)]


def pil_loop(images, size):
    import numpy as np
    from PIL import Image

    out = None
    for data in images:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = img.size
        side = max(w, h)
        canvas = Image.new("RGB", (side, side))
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        out = np.asarray(canvas.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return out


def tf_eager_loop(images, size):
    import tensorflow as tf

    out = None
    for data in images:
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        out = tf.image.resize_with_pad(tf.cast(img, tf.float32), size, size,
                                       antialias=True).numpy()
    return out


def make_dataset(work, classes, image_size):
    from sicot.data.importer import ImportConfig, import_dataset
    from sicot.data.synth import SynthConfig, generate

    data = os.path.join(work, "data")
    generate(SynthConfig(classes=classes, max_per_class=40, imbalance=10, eval_per_class=2,
                         test_per_class=4, image_size=image_size), data, progress=False,
             log=lambda *a: None)
    examples = os.path.join(work, "examples")
    import_dataset(data, examples, ImportConfig(), log=lambda *a: None, progress=False)
    return examples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", help="folder of <split>-*.tfrecord.gz (sicot import)")
    parser.add_argument("--synth-classes", type=int, default=50)
    parser.add_argument("--synth-image-size", type=int, default=96,
                        help="stored image side of the generated data (default 96)")
    parser.add_argument("--image-size", type=int, default=64, help="model input side")
    parser.add_argument("--multi-processing", action="store_true",
                        help="also time DirectRunner multi_processing with 2 workers")
    args = parser.parse_args(argv)

    from sicot.trainer.preprocessing import TransformConfig
    from sicot.trainer.transform_local import run_transform

    work = tempfile.mkdtemp(prefix="sicot_transform_bench_")
    try:
        examples = args.examples or make_dataset(work, args.synth_classes,
                                                 args.synth_image_size)
        images = _image_bytes(examples)
        results = {"images": len(images), "image_size": args.image_size}
        modes = {"transform_in_memory": ["--direct_running_mode=in_memory",
                                         "--direct_num_workers=1"]}
        if args.multi_processing:
            modes["transform_multi_processing_2"] = ["--direct_running_mode=multi_processing",
                                                     "--direct_num_workers=2"]
        for name, beam_args in modes.items():
            out = os.path.join(work, name)
            start = time.perf_counter()
            result = run_transform(examples, out, TransformConfig(image_size=args.image_size),
                                   beam_args=beam_args)
            seconds = time.perf_counter() - start
            n = sum(result.num_examples.values())
            results[name] = {"seconds": round(seconds, 2), "examples": n,
                             "images_per_s": round(n / seconds, 1)}
        for name, fn in (("pil_loop", pil_loop), ("tf_eager_loop", tf_eager_loop)):
            start = time.perf_counter()
            fn(images, args.image_size)
            seconds = time.perf_counter() - start
            results[name] = {"seconds": round(seconds, 2), "examples": len(images),
                             "images_per_s": round(len(images) / seconds, 1)}
        base = results["pil_loop"]["images_per_s"]
        results["relative_to_pil_loop"] = {
            k: round(v["images_per_s"] / base, 3) for k, v in results.items()
            if isinstance(v, dict) and "images_per_s" in v}
        results["cpu_count"] = os.cpu_count()
        results["load_avg_at_end"] = os.getloadavg()
        print(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
