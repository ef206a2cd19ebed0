"""Where do a model's few-shot errors go? Attribute distance of the wrong answers (synth data).

    .venv/bin/python bench/tail_errors.py --model MODEL_DIR --data /tmp/synth [--band-below 20]

Runs the test split through the image-only signature (`serving_default`) and, for every test
image of a class with fewer than `--band-below` training images, compares the predicted
class's attribute tuple (`classes.jsonl` of `sicot synth`) with the true one. Prints JSON:
images, correct, and the wrong answers by which attributes differ (1-2 named, else a count)
and by the band of the predicted class.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys

from sicot import contract


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    low, high = contract.DEFAULT_BAND_EDGES
    parser.add_argument("--band-below", type=int, default=low)
    parser.add_argument("--many-above", type=int, default=high)
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (tokenizer ops of the Transform graph)

    from sicot.trainer.evaluation.band_accuracy import read_split, resolve_saved_model_dir

    with open(f"{args.data}/classes.jsonl") as f:
        classes = {c["label"]: c for c in map(json.loads, f)}
    records, _ = read_split(args.data, "test")
    signature = tf.saved_model.load(resolve_saved_model_dir(args.model)).signatures[
        contract.IMAGE_SIGNATURE]

    def band(label):
        return contract.band_of_count(classes[label]["train_count"],
                                      (args.band_below, args.many_above))

    kinds, images, correct = collections.Counter(), 0, 0
    for start in range(0, len(records), 100):
        batch = records[start:start + 100]
        images_in = tf.constant([r[contract.IMAGE_KEY] for r in batch])
        predicted = signature(**{contract.IMAGE_KEY: images_in})[contract.CLASSES_OUTPUT]
        for record, top in zip(batch, predicted.numpy()[:, 0]):
            truth, guess = record[contract.LABEL_KEY].decode(), top.decode()
            if classes[truth]["train_count"] >= args.band_below:
                continue
            images += 1
            if guess == truth:
                correct += 1
                continue
            a, b = classes[truth]["attributes"], classes[guess]["attributes"]
            differ = sorted(k for k in a if a[k] != b[k])
            kinds["differ: " + ("+".join(differ) if len(differ) <= 2 else
                                f"{len(differ)} attributes")] += 1
            kinds["predicted band: " + band(guess)] += 1
    print(json.dumps({"few_shot_images": images, "correct": correct,
                      "wrong": dict(kinds.most_common())}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
