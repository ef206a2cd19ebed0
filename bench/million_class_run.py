"""A training run with a million classes on CPU: sampled (Partial FC) head, steps/s and peak RSS.

    .venv/bin/sicot synth --out /tmp/m1 --classes 1000000 --metadata-only --images-for 2000 \\
        --max-per-class 5 --imbalance 5 --eval-per-class 0 --test-per-class 0 --image-size 32
    .venv/bin/python bench/million_class_run.py --data /tmp/m1 --steps 40

The class table and training counts of all classes come from the synth metadata
(`classes.jsonl`, rank 0 = most frequent, the id order of the Transform's `label`
vocabulary); images exist for the `--images-for` classes only, spread from head to tail, so
the run trains on those records while the classifier, the logit-adjustment prior and the
exact evaluation softmax cover every class. Model: the trainer's own `SICoTModel` from
`build_model`, preset `logit_adjust` (visual tower small + visual head, logit-adjusted loss),
which above `sampled_classifier_min_classes` gets a `SampledClassifierHead` (negative share
0.1), with run_fn's optimizer (`SparseCentreAdamW`); `--head dense` raises the threshold so
the same model gets the dense `ClassifierHead` and AdamW, for comparison. Prints JSON:
classes, records, median step seconds and steps/s, peak RSS (resource.getrusage ru_maxrss),
RSS after building, peak RSS at the end of training and at the end (after the exact
evaluation), the optimizer state size, the loss first/last, and the top-1 of the exact 1M-way
softmax on --eval-records training images after training (a check that inference runs over
all classes, with its speed; it is not a held-out accuracy).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import time


def load(data_dir, image_size, max_records):
    import numpy as np
    from PIL import Image

    ranks, counts = {}, []
    with open(os.path.join(data_dir, "classes.jsonl"), encoding="utf-8") as f:
        for line in f:
            c = json.loads(line)
            ranks[c["label"]] = c["rank"]
            counts.append(c["train_count"])
    images, labels = [], []
    with open(os.path.join(data_dir, "train.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            path = row.get("image")
            if not path:
                continue
            full = os.path.join(data_dir, path)
            if not os.path.isfile(full):
                continue
            with open(full, "rb") as img_file:
                img = Image.open(io.BytesIO(img_file.read())).convert("RGB")
            images.append(np.asarray(img.resize((image_size, image_size), Image.BILINEAR),
                                     dtype="float32"))
            labels.append(ranks[row["label"]])
            if len(images) >= max_records:
                break
    if not images:
        raise SystemExit(f"{data_dir}: no training rows with an existing image (synth with "
                         f"--images-for K)")
    return np.stack(images), np.asarray(labels, "int32"), np.asarray(counts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="sicot synth --metadata-only output")
    parser.add_argument("--head", choices=("sampled", "dense"), default="sampled")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--negative-share", type=float, default=0.1)
    parser.add_argument("--centre-learning-rate", type=float, default=0.1)
    parser.add_argument("--max-records", type=int, default=20_000)
    parser.add_argument("--eval-records", type=int, default=512,
                        help="training images scored with the exact 1M-way softmax after training")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    x, y, counts = load(args.data, args.image_size, args.max_records)
    load_s = time.perf_counter() - start
    num_classes = len(counts)

    import keras
    import numpy as np
    import psutil
    import tensorflow as tf

    from sicot.trainer.model.config import ModelConfig
    from sicot.contract import IMAGE_INPUT, VISUAL_LOGITS
    from sicot.trainer.model.sicot_model import build_model
    from sicot.trainer.task import make_optimizer

    # The trainer's own model: the visual-only logit-adjustment preset; above
    # sampled_classifier_min_classes (50,000) build_model gives it a SampledClassifierHead.
    config = ModelConfig.preset("logit_adjust").replace(
        embedding_dim=args.embedding_dim, batch_size=args.batch,
        negative_share=args.negative_share, centre_learning_rate=args.centre_learning_rate,
        sampled_classifier_min_classes=(
            2 * num_classes if args.head == "dense"
            else min(ModelConfig().sampled_classifier_min_classes, num_classes)),
        augment=False)
    model = build_model(config, num_classes, vocab_size=2, class_counts=counts, max_tokens=1,
                        image_size=args.image_size)
    assert model.sampled == (args.head == "sampled")
    optimizer = make_optimizer(config, args.steps, sampled=model.sampled)
    model.compile(optimizer=optimizer)
    rss_built = psutil.Process().memory_info().rss

    ds = (tf.data.Dataset.from_tensor_slices(({IMAGE_INPUT: x}, y)).shuffle(len(y), seed=0)
          .repeat().batch(args.batch))
    times, losses = [], []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)
            losses.append(float(logs["loss"]))

    model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0, callbacks=[Timer()])
    step = statistics.median(times[1:])
    peak_training = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    predictions = []
    n_eval = min(len(y), args.eval_records)
    for i in range(0, n_eval, 64):
        batch = {IMAGE_INPUT: x[i:min(i + 64, n_eval)]}
        predictions.append(np.argmax(np.asarray(model(batch)[VISUAL_LOGITS]), -1))
    eval_s = time.perf_counter() - start
    top1 = float((np.concatenate(predictions) == y[:n_eval]).mean())
    print(json.dumps({
        "head": args.head, "classes": num_classes, "records": int(len(y)),
        "classes_with_images": int(len(set(y.tolist()))), "image_size": args.image_size,
        "batch": args.batch, "steps": len(times), "first_step_s": round(times[0], 2),
        "median_step_s": round(step, 3), "steps_per_s": round(1 / step, 2),
        "images_per_s": round(args.batch / step, 1),
        "peak_rss_training_mib": round(peak_training, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_build_mib": round(rss_built / 2 ** 20, 1),
        "optimizer_state_mib": round(sum(int(np.prod(v.shape)) for v in optimizer.variables)
                                     * 4 / 2 ** 20, 1),
        "loss_first": round(losses[0], 3), "loss_last": round(losses[-1], 3),
        "full_softmax_top1_on_train_images": round(top1, 4),
        "full_softmax_eval_images": int(n_eval),
        "full_softmax_eval_images_per_s": round(n_eval / eval_s, 1),
        "load_s": round(load_s, 1),
        "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
