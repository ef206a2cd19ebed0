"""Checks that every transformed training record of IconShop-LT carries the image its label
belongs to: the image bytes (kept byte for byte at 64 px) are looked up by md5 among the source
files, and each label id must map to exactly one source label.

    .venv/bin/python check_alignment.py DATA_DIR TRANSFORMED_TRAIN.tfrecord.gz
"""
import collections
import hashlib
import json
import sys

import tensorflow as tf

data, records = sys.argv[1], sys.argv[2]
source = {}
for line in open(f"{data}/train.jsonl"):
    r = json.loads(line)
    source[hashlib.md5(open(f"{data}/{r['image']}", "rb").read()).hexdigest()] = r["label"]
labels = collections.defaultdict(collections.Counter)
n = found = 0
for raw in tf.data.TFRecordDataset(records, compression_type="GZIP"):
    f = tf.train.Example.FromString(raw.numpy()).features.feature
    h = hashlib.md5(f["image_xf"].bytes_list.value[0]).hexdigest()
    n += 1
    if h in source:
        found += 1
        labels[f["label_xf"].int64_list.value[0]][source[h]] += 1
mixed = {k: dict(v) for k, v in labels.items() if len(v) > 1}
print(json.dumps({"records": n, "found_by_md5": found, "label_ids": len(labels),
                  "ids_with_more_than_one_source_label": len(mixed)}))
