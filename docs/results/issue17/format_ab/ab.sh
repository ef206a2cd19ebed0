#!/bin/bash
# Issue 17 A/B: the commit before the compact-JPEG format (f9d913d^) against f9d913d, same data, seeds, settings.
cd /work/runs/lead/s3
PY=/work/wt/lead/.venv/bin/python
for seed in 0 1 2; do
  for tree in int64 jpeg; do
    out=ab/$tree/s$seed
    [ -f $out/eval.json ] && continue
    mkdir -p ab/$tree
    start=$(date +%s)
    $PY sicot_at.py /work/runs/lead/s3/ab_$tree train --data /work/data/synth --model sicot --epochs 20 --image-size 32 --seed $seed --out $out/model --work-dir ab/$tree/work > ab/$tree/s$seed.train.log 2>&1 || { echo "train $tree $seed failed"; continue; }
    $PY sicot_at.py /work/runs/lead/s3/ab_$tree evaluate --model $out/model --data /work/data/synth --json $out/eval.json > ab/$tree/s$seed.eval.log 2>&1 || echo "eval $tree $seed failed"
    echo "$tree seed $seed done in $(( $(date +%s) - start )) s"
  done
done
