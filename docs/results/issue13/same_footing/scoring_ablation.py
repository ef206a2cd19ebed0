"""Enrol the issue-13 base models with the scoring forced each way; new / trained top-1 through the SavedModel."""
import json, os, shutil, sys
sys.path.insert(0, '/work/wt/lead/bench')
from enrollment_report import TestSplit, latest_saved_model  # noqa
from sicot.trainer.enrollment.catalogue import enroll_folder
root = '/work/runs/lead/s3/enrol/runs/synthetic'
out_root = '/work/runs/lead/s3/scoring'
test = TestSplit('/tmp/catalog-synth')
results = json.load(open(f'{out_root}/results.json')) if os.path.isfile(f'{out_root}/results.json') else {}
for seed in (0, 1, 2):
    for model, use_text in (('cosine', False), ('sicot', True)):
        for scoring in ('same-footing', 'budget'):
            for k in (1, 5):
                key = f'{model}|{scoring}|{seed}|{k}'
                if key in results:
                    continue
                out = f'{out_root}/{model}_{scoring}_s{seed}_k{k}'
                shutil.rmtree(out, ignore_errors=True)
                report = enroll_folder(f'{root}/seed{seed}/{model}', '/tmp/catalog-synth/catalogue.jsonl', out,
                                       max_images=k, use_text=use_text, scoring=scoring, log=lambda *_: None)
                s = test.score(report['saved_model'])
                results[key] = {k2: round(v, 1) if isinstance(v, float) else v for k2, v in s.items()}
                shutil.rmtree(os.path.join(out, 'export'), ignore_errors=True)
                print(key, results[key]['new_top1'], results[key]['trained_top1'], flush=True)
                json.dump(results, open(f'{out_root}/results.json', 'w'), indent=1)
