"""Zero-photo: an offset for text-only prototypes set on the trained classes (calibrated stacking), seed 0, numpy."""
import sys, numpy as np
sys.path.insert(0, '/work/wt/lead')
from sicot.trainer.enrollment import prototypes as E
e = dict(np.load(sys.argv[1] + '/probe_cache.npz', allow_pickle=True))
C = len(e['class_names']); lab = e['train_labels']; v = e['train_visual'].astype(float)
mu, _ = E.class_means(v, lab, C); U = E.unit(mu)
idx = E.balanced_subset(lab)
M = E.fit_ridge(e['train_listing'][idx], mu[lab[idx]])
rng = np.random.default_rng(0)
# pseudo-new: each training listing's text prototype vs another photo of its class
gaps = []
for i in E.balanced_subset(lab, 10, seed=2):
    same = np.flatnonzero(lab == lab[i]); same = same[same != i]
    if not len(same): continue
    j = rng.choice(same)
    t = E.unit(M(e['train_listing'][i:i+1]))[0]; x = E.unit(v[j])
    gaps.append(x @ U[lab[i]] - x @ t)
gamma = float(np.median(gaps))
T = E.unit(M(e['cat_listing']))
new = np.isin(e['test_labels'], e['cat_labels']); tv = E.unit(e['test_visual'])
names = np.concatenate([e['class_names'], e['cat_labels']])
for g in [0, gamma / 2, gamma, 1.5 * gamma]:
    full = np.concatenate([tv @ U.T, tv @ T.T + g], 1)
    hit = names[full.argmax(1)] == e['test_labels']
    print(f"offset {g:.3f}: new {100*hit[new].mean():.1f} trained {100*hit[~new].mean():.1f}")
print('gamma (median gap on training photos)', round(gamma, 3))
