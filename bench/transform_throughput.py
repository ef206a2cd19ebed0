"""Transform throughput: tf.Transform on Beam against a plain Python loop doing the same work.

    .venv/bin/python bench/transform_throughput.py --images 20000 --out runs/transform.json
    .venv/bin/python bench/transform_throughput.py --examples EXAMPLES_DIR --small 2000

Data: `sicot synth` (JPEG, 10% PNG, `--synth-image-size` px) + `sicot import`, not timed; or
`--examples` (`<split>-*.tfrecord.gz` of `sicot import`). Every record goes into one train split.
Timed, in one run, on the same records:
  transform_<mode>   `transform_local.run_transform` (the pipeline's preprocessing_fn: compact
                     JPEG storage, tensorflow-text tokens, vocabularies, label counts, bands;
                     reading and writing GZIP TFRecords), DirectRunner in_memory (1 worker) and,
                     with --multi-processing, multi_processing (--workers processes). Each is
                     timed on the first `--small` records and on all of them: the difference
                     gives the marginal rate (images/s) and the fixed cost (Beam start-up,
                     analysis pass, tracing the graph) = time(small) - small / marginal rate.
  python_loop        the same work in plain Python over the same records, one at a time: parse
                     the tf.Example, PIL image header (a fitting JPEG is kept as it is, anything
                     else is decoded, shrunk to fit and encoded as JPEG), case-fold + CJK split
                     + punctuation strip + whitespace tokens, vocabulary and label lookups, a
                     serialized output tf.Example; no Beam, no files written.
  pil_decode_resize  the previous Transform's image work as a loop: PIL decode, pad to square,
                     resize to S (what the pixels format needed for every image).
Prints (and with --out writes) JSON with images/s, the ratios to python_loop and the load average.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import unicodedata

_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def _records(examples_dir):
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(examples_dir, "*.tfrecord.gz")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def write_train_split(records, out_dir):
    import tensorflow as tf

    os.makedirs(out_dir, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(out_dir, "train-00000-of-00001.tfrecord.gz"),
                              options="GZIP") as writer:
        for record in records:
            writer.write(record)
    return out_dir


def _tokens(text: str, max_tokens: int) -> list[str]:
    text = _CJK.sub(r" \1 ", text.casefold())
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return text.split()[:max_tokens]


def python_loop(records, image_size, max_side, max_tokens=32):
    """The Transform's per-record work in plain Python (vocabularies from a first pass)."""
    import collections

    import tensorflow as tf
    from PIL import Image

    parsed = []
    for record in records:
        f = tf.train.Example.FromString(record).features.feature
        parsed.append({k: f[k].bytes_list.value[0] for k in ("image", "title", "tags", "label")})
    counts = collections.Counter(t for p in parsed for t in _tokens(
        (p["title"] + b" " + p["tags"]).decode(), max_tokens))
    vocab = {t: i + 2 for i, (t, c) in enumerate(counts.most_common()) if c >= 2}
    labels = {l: i for i, (l, _) in enumerate(collections.Counter(p["label"] for p in parsed).most_common())}
    out = None
    for p in parsed:
        data = p["image"]
        img = Image.open(io.BytesIO(data))
        if not (img.format == "JPEG" and max(img.size) <= max_side and img.mode == "RGB"):
            img = img.convert("RGB")
            if max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.BILINEAR)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=90)
            data = buffer.getvalue()
        ids = [vocab.get(t, 1) for t in _tokens((p["title"] + b" " + p["tags"]).decode(), max_tokens)]
        ids += [0] * (max_tokens - len(ids))
        out = tf.train.Example(features=tf.train.Features(feature={
            "image_xf": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
            "tokens_xf": tf.train.Feature(int64_list=tf.train.Int64List(value=ids)),
            "label_xf": tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[p["label"]]])),
        })).SerializeToString()
    return out


def pil_decode_resize(records, image_size):
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    out = None
    for record in records:
        data = tf.train.Example.FromString(record).features.feature["image"].bytes_list.value[0]
        img = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = img.size
        side = max(w, h)
        canvas = Image.new("RGB", (side, side))
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        out = np.asarray(canvas.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)
    return out


def make_dataset(work, images, image_size):
    from sicot.data.importer import ImportConfig, import_dataset
    from sicot.data.synth import SynthConfig, generate

    data = os.path.join(work, "data")
    # About 22 images per class on average at imbalance 10 with at most 60 per class.
    classes = max(10, images // 20)
    generate(SynthConfig(classes=classes, max_per_class=60, imbalance=10, eval_per_class=0,
                         test_per_class=0, image_size=image_size), data, progress=False,
             log=lambda *a: None)
    examples = os.path.join(work, "examples")
    import_dataset(data, examples, ImportConfig(), log=lambda *a: None, progress=False)
    return examples


def time_transform(examples, out, config, beam_args):
    from sicot.trainer.transform.run_local import run_transform

    start = time.perf_counter()
    result = run_transform(examples, out, config, splits=("train",), beam_args=beam_args)
    return time.perf_counter() - start, sum(result.num_examples.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", help="folder of <split>-*.tfrecord.gz (sicot import)")
    parser.add_argument("--images", type=int, default=20000, help="images to generate (at least)")
    parser.add_argument("--small", type=int, default=2000, help="records of the small run")
    parser.add_argument("--synth-image-size", type=int, default=96,
                        help="stored image side of the generated data (default 96)")
    parser.add_argument("--image-size", type=int, default=64, help="model input side S")
    parser.add_argument("--multi-processing", action="store_true",
                        help="also time DirectRunner multi_processing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", help="keep the generated data here (reused when present)")
    parser.add_argument("--out", help="also write the JSON document to this file")
    args = parser.parse_args(argv)

    from sicot.trainer.transform import images as image_ops
    from sicot.trainer.transform.preprocessing import TransformConfig

    work = args.work or tempfile.mkdtemp(prefix="sicot_transform_bench_")
    os.makedirs(work, exist_ok=True)
    load_before = os.getloadavg()[0]
    try:
        examples = args.examples
        if not examples:
            examples = os.path.join(work, "examples")
            if not glob.glob(os.path.join(examples, "*.tfrecord.gz")):
                examples = make_dataset(work, args.images, args.synth_image_size)
        records = _records(examples)
        small = min(args.small, len(records) // 2)
        sets = {"small": write_train_split(records[:small], os.path.join(work, "set_small")),
                "all": write_train_split(records, os.path.join(work, "set_all"))}
        config = TransformConfig(image_size=args.image_size)
        results = {"images": len(records), "small_images": small, "image_size": args.image_size,
                   "stored_max_side": image_ops.stored_side(args.image_size)}
        modes = {"transform_in_memory": ["--direct_running_mode=in_memory", "--direct_num_workers=1"]}
        if args.multi_processing:
            modes[f"transform_multi_processing_{args.workers}"] = [
                "--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
        for name, beam_args in modes.items():
            seconds = {}
            for size, examples_dir in sets.items():
                out = os.path.join(work, f"{name}_{size}")
                shutil.rmtree(out, ignore_errors=True)
                seconds[size], n = time_transform(examples_dir, out, config, beam_args)
                shutil.rmtree(out, ignore_errors=True)
                if n != (small if size == "small" else len(records)):
                    raise RuntimeError(f"{name} on {size}: {n} records out")
            marginal = (len(records) - small) / (seconds["all"] - seconds["small"])
            results[name] = {"seconds_small": round(seconds["small"], 2),
                             "seconds_all": round(seconds["all"], 2),
                             "images_per_s_overall": round(len(records) / seconds["all"], 1),
                             "marginal_images_per_s": round(marginal, 1),
                             "fixed_cost_s": round(seconds["small"] - small / marginal, 2)}
        for name, fn in (("python_loop", lambda r: python_loop(r, args.image_size,
                                                               image_ops.stored_side(args.image_size))),
                         ("pil_decode_resize", lambda r: pil_decode_resize(r, args.image_size))):
            start = time.perf_counter()
            fn(records)
            seconds = time.perf_counter() - start
            results[name] = {"seconds": round(seconds, 2),
                             "images_per_s": round(len(records) / seconds, 1)}
        base = results["python_loop"]["images_per_s"]
        results["marginal_rate_over_python_loop"] = {
            k: round(v["marginal_images_per_s"] / base, 3) for k, v in results.items()
            if isinstance(v, dict) and "marginal_images_per_s" in v}
        results["cpu_count"] = os.cpu_count()
        results["load_average_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        text = json.dumps(results, indent=1)
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
