import numpy as np, sys
sys.path.insert(0, '.')
from sicot.trainer.enrollment import prototypes as E
for m in ['sicot','cosine']:
    e = dict(np.load(f'/tmp/enrol/runs/synthetic/seed0/{m}/probe_cache.npz', allow_pickle=True))
    C = len(e['class_names']); kind=str(e['visual_kind'])
    head = E.HeadRows(kind, e['visual_rows'], e.get('visual_bias'), float(e['visual_scale']))
    new = np.isin(e['test_labels'], e['cat_labels']); tv = E.unit(e['test_visual'])
    names = np.concatenate([e['class_names'], e['cat_labels']])
    train = {"labels": e["train_labels"], "visual": e["train_visual"]}
    text = "train_listing" in e
    if text: train.update(listing=e["train_listing"], semantic=e["train_semantic"])
    cal = E.fit_calibration(train, {"visual": head}, C, seed=0)
    mu,_ = E.class_means(e['train_visual'], e['train_labels'], C)
    def sc(T, P, off=0.0):
        full = np.concatenate([tv @ E.unit(T).T, tv @ E.unit(P).T + off], 1)
        hit = names[full.argmax(1)] == e['test_labels']
        return f"{100*hit[new].mean():5.1f}/{100*hit[~new].mean():5.1f}"
    print(m, 'before', 100*np.mean(names[head.logits(e['test_visual']).argmax(1)][~new]==e['test_labels'][~new]))
    for k in [0,1,2,5]:
      for use_text in ([True, False] if text else [False]):
        if k==0 and not use_text: continue
        P = np.stack([E.sku_prototypes(cal, e['cat_visual'][np.flatnonzero(e['cat_sku']==i)[:k]], e['cat_visual'][np.flatnonzero(e['cat_sku']==i)[:k]], e['cat_listing'][i] if use_text else None, use_text=use_text)['visual'] for i in range(20)])
        print(f"  k{k} {'text' if use_text else 'phot'} ncm_mu {sc(mu,P)} rows {sc(head.rows,P)} | ncm off+.02 {sc(mu,P,.02)} +.05 {sc(mu,P,.05)} -.02 {sc(mu,P,-.02)}")
