import sys, numpy as np
sys.path.insert(0, '/work/wt/lead')
from sicot.trainer.enrollment import prototypes as E
e = dict(np.load(sys.argv[1] + '/probe_cache.npz', allow_pickle=True))
C = len(e['class_names']); lab = e['train_labels']
mu, _ = E.class_means(e['train_visual'].astype(float), lab, C)
idx = E.balanced_subset(lab)
M = E.fit_ridge(e['train_listing'][idx], mu[lab[idx]])
T = M(e['cat_listing'])
new = np.isin(e['test_labels'], e['cat_labels']); tv = E.unit(e['test_visual'])
names = np.concatenate([e['class_names'], e['cat_labels']])
def gen(P):
    full = np.concatenate([tv @ E.unit(mu).T, tv @ E.unit(P).T], 1)
    hit = names[full.argmax(1)] == e['test_labels']
    nn = np.mean(e['cat_labels'][(tv[new] @ E.unit(P).T).argmax(1)] == e['test_labels'][new])
    return f"{100*nn:5.1f} {100*hit[new].mean():5.1f}/{100*hit[~new].mean():5.1f}"
for k in [1, 2, 5]:
    m = np.stack([e['cat_visual'][e['cat_sku'] == i][:k].mean(0) for i in range(len(T))])
    print(k, ' | '.join(f"w{w}: {gen((k*m + w*T)/(k+w))}" for w in [0, 0.28, 0.5, 1, 2]))
