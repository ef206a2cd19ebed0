"""Zero-photo text prototypes: which listing representation maps best to the visual class mean."""
import sys, json, numpy as np
sys.path.insert(0, '/work/wt/lead')
import tensorflow as tf
from sicot import contract
from sicot.trainer.enrollment import prototypes as E
model_dir = sys.argv[1]
e = dict(np.load(f'{model_dir}/probe_cache.npz', allow_pickle=True))
rep = json.load(open(f'{model_dir}/train_report.json'))
files = sorted(tf.io.gfile.glob(rep['transformed_files']['train']))
spec = {contract.TOKENS_XF: tf.io.VarLenFeature(tf.int64), contract.LABEL_XF: tf.io.FixedLenFeature([], tf.int64)}
toks, labs = [], []
for b in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(512):
    p = tf.io.parse_example(b, spec)
    toks += [list(r) for r in tf.sparse.to_dense(p[contract.TOKENS_XF]).numpy()]
    labs += list(p[contract.LABEL_XF].numpy())
labs = np.array(labs)
assert (labs == e['train_labels']).all(), 'order differs'
V = int(max(max(t) for t in toks if len(t)) + 1); V = max(V, int(e['cat_tokens'].max()) + 1)
def bow(rows):
    X = np.zeros((len(rows), V))
    for i, r in enumerate(rows):
        for t in r:
            if t >= contract.FIRST_VOCAB_TOKEN_ID: X[i, t] = 1.0
    return X
Xtr, Xcat = bow(toks), bow(e['cat_tokens'])
C = len(e['class_names']); lab = e['train_labels']
v = e['train_visual'].astype(np.float64); mu, _ = E.class_means(v, lab, C)
new = np.isin(e['test_labels'], e['cat_labels']); tv = e['test_visual']
names = np.concatenate([e['class_names'], e['cat_labels']])
def newonly(P):
    return round(100*np.mean(e['cat_labels'][(E.unit(tv[new]) @ E.unit(P).T).argmax(1)] == e['test_labels'][new]), 1)
def general(P):
    full = np.concatenate([E.unit(tv) @ E.unit(mu).T, E.unit(tv) @ E.unit(P).T], 1)
    hit = names[full.argmax(1)] == e['test_labels']
    return round(100*hit[new].mean(), 1), round(100*hit[~new].mean(), 1)
idx = E.balanced_subset(lab)
res = {}
M = E.fit_ridge(e['train_listing'][idx], mu[lab[idx]]); P = M(e['cat_listing']); res['s0 ridge'] = (newonly(P), general(P), M.loo_mse)
M = E.fit_ridge(Xtr[idx], mu[lab[idx]]); P = M(Xcat); res['bow ridge'] = (newonly(P), general(P), M.loo_mse)
M = E.fit_ridge(Xtr[idx], E.unit(mu)[lab[idx]]); P = M(Xcat); res['bow ridge unit'] = (newonly(P), general(P), M.loo_mse)
# idf-weighted bow
df = Xtr.sum(0); idf = np.log((1 + len(Xtr)) / (1 + df))
M = E.fit_ridge(Xtr[idx] * idf, mu[lab[idx]]); P = M(Xcat * idf); res['tfidf ridge'] = (newonly(P), general(P), M.loo_mse)
# word centroids
cent = (Xtr.T @ v) / np.maximum(df, 1)[:, None]
P = np.stack([ (Xcat[i] * idf) @ cent / max((Xcat[i] * idf).sum(), 1e-9) for i in range(len(Xcat))]); res['word centroids idf'] = (newonly(P), general(P))
# 5-photo reference
P5 = np.stack([e['cat_visual'][e['cat_sku'] == i][:5].mean(0) for i in range(len(e['cat_labels']))]); res['5 photos'] = (newonly(P5), general(P5))
print(json.dumps(res, indent=0))
