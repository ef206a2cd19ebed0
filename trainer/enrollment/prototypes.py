"""Enrolment maths: new classes for a trained model from photos and listing text, no gradient.

A trained head keeps every trained row. Each enrolled class adds a **prototype** p in the
head's input space (visual head: the visual embedding v; semantic head: the semantic
embedding s; fused head: [v, s]) and is scored like a cosine classifier (imprinting, Qi et al.
2018), calibrated onto the trained logits' scale:
    logit_n(z) = a * cos(z, p_n) + b
1. Photos. The visual prototype of k photos is their mean embedding m_k.
2. Listing text (models with a text branch). The listing's semantic embedding s0 is the word
   attention with an empty visual query (every word weighs the same: there is no photo to
   attend from). A ridge map M, fitted on the training examples (s0 of each training title ->
   the mean visual embedding of its class; strength by exact leave-one-out error), carries it
   into the visual space: t = M s0. A model that learned a listing -> visual projection R in
   training (`ModelConfig.listing_weight`) has the map fitted on R s0 instead: t = M R s0
   (`Calibration.text_input`).
3. Both are independent noisy estimates of the class mean, combined by inverse variance:
       p = (k m_k + lambda t) / (k + lambda),   lambda = sigma_v^2 / sigma_t^2,
   sigma_v^2 the mean squared distance of a photo embedding from its class mean, sigma_t^2
   the leave-one-out squared error of M, both measured on the trained classes: lambda is the
   number of photos the listing is worth. No photo: p = t; no text: p = m_k.
4. Scale a: the slope of a trained class's own logit against cos(v, its class mean) over the
   training photos (least squares), so a cosine score means what it means for trained classes.
5. Offset b (the prior of the enrolled classes, one per head and enrolment): the lowest value
   such that at most `trained_budget` (default 1%) of a class-balanced sample of the trained
   classes' training photos would be answered with an enrolled class. New classes therefore
   cannot swallow the trained ones, and they win whenever they beat the trained classes by more
   than the trained classes beat each other on that share of photos. b is set anew for all
   enrolled classes at every enrolment, since it depends on the whole catalogue.
6. Same footing (a head whose trained classes score as well by their class means): a trained
   head's logits and a prototype's cosine are different geometries (a linear head's logits grow
   with |z| and were fitted on the very photos b is set on), and step 5 then keeps most new
   SKUs' photos with the trained classes (measured: 83-99 %, docs/experiments.md). The other
   rule (RULES: "same-footing") scores trained and enrolled classes alike: the trained classes
   as `a * cos(z, class mean)` over the training photos' embeddings (nearest class mean), the
   enrolled ones `a * cos(z, prototype)`, b = 0 for both.
7. Which rule, per head (`sicot enroll --scoring auto`): the enrolment check
   (`enrolment_check`) measures both on data enrolment has: trained top-1 before and after on
   held-out photos of the trained classes (a sample of the eval split kept in the calibration,
   `HeldOutSample`), and how often the enrolled SKUs are named, leave-one-out over the
   catalogue photos of SKUs with 2+ photos. Among the rules whose trained drop is within
   `max_trained_drop` (default 1 point), the one whose SKUs are named most often. Where that
   cannot be measured (no SKU with 2+ photos, or a calibration without held-out photos) the
   calibration's check decides: same footing when the class means are top-1 within
   `SAME_FOOTING_TOLERANCE` of the head on held-out photos, else steps 4-5. `--scoring
   same-footing|budget` forces a rule (SCORINGS); the figures are reported either way, and a
   warning is given when the enrolled SKUs would almost never be named. SKUs enrolled from
   the listing alone have no photo to hold out: the calibration simulates them on trained
   classes taken out of the text map (`ListingAlone`), and the check reports and warns on
   that (and `auto` weighs the rules on it when no enrolled SKU has a photo). An empty
   catalogue changes nothing either way.
Chosen over a ridge map from class means to trained linear rows and over uncalibrated imprinting
by `bench/enrollment_probe.py` (docs/experiments.md, issue 13).
"""
from __future__ import annotations

import dataclasses

import numpy as np

RIDGE_ALPHAS = tuple(10.0 ** e for e in range(-6, 5))
MAX_FIT_EXAMPLES_PER_CLASS = 50  # balances the fit of M over a long-tailed training set
VALIDATION_PER_CLASS = 20        # trained photos per class that set the offset b
MAX_VALIDATION = 20_000
DEFAULT_TRAINED_BUDGET = 0.01
SAME_FOOTING_TOLERANCE = 0.005  # top-1 the class means may lose against the head (step 7)
SCORINGS = ("auto", "same-footing", "budget")  # step 7 (the enrolment check); step 6; never
RULES = ("same-footing", "budget")  # the scoring rules `auto` chooses between
MAX_CHECK_PHOTOS = 2000  # held-out photos kept for the enrolment check (`enrolment_check`)
LISTING_CHECK_CLASSES = 100  # trained classes held out of the text map to simulate step 2 alone
# bump when the saved calibration changes meaning (4: class means always; 5: + held-out sample;
# 6: + the listing-alone simulation)
CALIBRATION_VERSION = 6
READABLE_VERSIONS = (4, 5, 6)  # older files lack the held-out sample (4) or the listing-alone
#                                 figures (4, 5): their check is partial
CALIBRATION_FILE = "enrollment_calibration.npz"  # in a model's run folder
HEADS = ("visual", "semantic", "fused")
TEXT_INPUTS = ("listing", "listing_visual")  # s0, or R s0 (a learned projection)


# ---------------------------------------------------------------------------------------------
# Ridge regression with the strength chosen by leave-one-out error


@dataclasses.dataclass(frozen=True)
class RidgeMap:
    """y = x @ coef + intercept, fitted by ridge regression."""

    coef: np.ndarray       # [D_in, D_out]
    intercept: np.ndarray  # [D_out]
    alpha: float
    loo_mse: float         # leave-one-out mean squared error (summed over outputs)

    def __call__(self, x):
        return np.asarray(x, np.float64) @ self.coef + self.intercept


def fit_ridge(x, y, alphas=RIDGE_ALPHAS) -> RidgeMap:
    """Ridge regression of y [N, D_out] on x [N, D_in] (with intercept), the strength alpha
    (relative to the mean squared singular value) picked by exact leave-one-out error."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"fit_ridge: x {x.shape} and y {y.shape} must be [N, .] with N >= 2")
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    scale = float(np.mean(s ** 2)) or 1.0
    uty = u.T @ yc
    n = x.shape[0]
    best = None
    for alpha in alphas:
        shrink = s ** 2 / (s ** 2 + alpha * scale)
        fitted = u @ (shrink[:, None] * uty)
        leverage = (u ** 2) @ shrink + 1.0 / n
        residual = (yc - fitted) / np.maximum(1.0 - leverage, 1e-6)[:, None]
        mse = float(np.mean(np.sum(residual ** 2, axis=1)))
        if best is None or mse < best[0]:
            best = (mse, alpha)
    mse, alpha = best
    coef = vt.T @ ((s / (s ** 2 + alpha * scale))[:, None] * uty)
    return RidgeMap(coef, y_mean - x_mean @ coef, float(alpha), mse)


# ---------------------------------------------------------------------------------------------
# Helpers


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_means(features, labels, num_classes):
    """[C, D] mean feature per class (zeros for a class without examples) and counts [C]."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels).reshape(-1)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes].astype(np.float64)
    sums = np.zeros((num_classes, features.shape[1]))
    np.add.at(sums, labels, features)
    return sums / np.maximum(counts, 1.0)[:, None], counts


def balanced_subset(labels, per_class=MAX_FIT_EXAMPLES_PER_CLASS, seed=0, cap=None):
    """Indices of at most `per_class` random examples of each class (and `cap` in all)."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(labels)), labels))  # by class, random within a class
    sorted_labels = labels[order]
    first = np.r_[0, np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1]
    rank = np.arange(len(labels)) - np.repeat(first, np.diff(np.r_[first, len(labels)]))
    keep = order[rank < per_class]
    if cap is not None and len(keep) > cap:
        keep = rng.choice(keep, cap, replace=False)
    return np.sort(keep)


@dataclasses.dataclass(frozen=True)
class HeadRows:
    """A trained head's class rows: logits = z @ rows.T + bias (linear) or
    scale * cos(z, rows) (cosine)."""

    kind: str                 # "linear" | "cosine"
    rows: np.ndarray          # [C, D_in]
    bias: np.ndarray | None   # [C] for linear
    scale: float = 1.0        # for cosine

    def logits(self, z):
        z = np.asarray(z, np.float64)
        if self.kind == "cosine":
            return self.scale * unit(z) @ unit(self.rows).T
        return z @ self.rows.T + self.bias


def head_features(name, data):
    """The head's input feature of embeddings `data` (`visual`, `semantic`)."""
    if name == "visual":
        return np.asarray(data["visual"], np.float64)
    if name == "semantic":
        return np.asarray(data["semantic"], np.float64)
    if name == "fused":
        return np.concatenate([np.asarray(data["visual"], np.float64),
                               np.asarray(data["semantic"], np.float64)], axis=1)
    raise ValueError(f"unknown head {name!r}")


# ---------------------------------------------------------------------------------------------
# Calibration on the trained classes


@dataclasses.dataclass(frozen=True)
class HeldOutSample:
    """At most MAX_CHECK_PHOTOS held-out photos of the trained classes, as the enrolment check
    (`enrolment_check.trained_side`) scores them: what the trained head answered, and the
    features to score enrolled classes and class means on."""

    features: np.ndarray  # [M, D_in] unit features
    labels: np.ndarray    # [M] their classes
    head_top: np.ndarray  # [M] the trained head's answer
    head_max: np.ndarray  # [M] its logit


@dataclasses.dataclass(frozen=True)
class HeadCalibration:
    scale: float                  # a
    validation: np.ndarray        # [M, D_in] unit features of sampled training photos
    trained_max: np.ndarray       # [M] their best trained logit
    class_means: np.ndarray       # [C, D_in] unit class means of the training photos
    held_out: dict | None = None  # held-out top-1 of the head and of the class means
    held_out_sample: HeldOutSample | None = None  # for the enrolment check
    # rule -> how often classes enrolled from their listing alone are named (`listing_alone`)
    listing_only: dict | None = None

    @property
    def same_footing(self) -> bool:
        """Step 7's fallback check: the class means are within the tolerance of the head on
        held-out photos (False when there were none)."""
        return bool(self.held_out and self.held_out["photos"]
                    and self.held_out["class_means"]
                    >= self.held_out["head"] - SAME_FOOTING_TOLERANCE)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What enrolment fits once on the trained classes (saved beside the model)."""

    text_map: RidgeMap | None     # listing s0 -> visual class mean
    text_weight: float            # lambda: photos the listing is worth
    photo_variance: float         # sigma_v^2
    text_variance: float          # sigma_t^2
    heads: dict                   # head name -> HeadCalibration
    text_input: str = "listing"   # what text_map reads: s0 or R s0 (TEXT_INPUTS)

    def __post_init__(self):
        if self.text_input not in TEXT_INPUTS:
            raise ValueError(f"Calibration.text_input={self.text_input!r}: expected one of "
                             f"{list(TEXT_INPUTS)}")

    def summary(self) -> dict:
        return {"text_weight": self.text_weight, "photo_variance": self.photo_variance,
                "text_variance": self.text_variance,
                "text_map_alpha": None if self.text_map is None else self.text_map.alpha,
                "text_input": self.text_input,
                "score_scale": {k: h.scale for k, h in self.heads.items()},
                "validation_photos": {k: len(h.trained_max) for k, h in self.heads.items()},
                "same_footing": {k: h.same_footing for k, h in self.heads.items()},
                "held_out_top1": {k: h.held_out for k, h in self.heads.items() if h.held_out},
                "check_photos": {k: (0 if h.held_out_sample is None
                                     else len(h.held_out_sample.labels))
                                 for k, h in self.heads.items()},
                "listing_only": {k: h.listing_only for k, h in self.heads.items()
                                 if h.listing_only}}


def _top1(scores, labels) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == labels)) if len(labels) else 0.0


def held_out_sample(features, labels, logits, seed: int = 0,
                    cap: int = MAX_CHECK_PHOTOS) -> HeldOutSample | None:
    """A random sample of at most `cap` held-out photos (the split's own class mix: the check
    reports top-1 as the Evaluator measures it), None when there are none."""
    if len(labels) == 0:
        return None
    keep = np.arange(len(labels))
    if len(keep) > cap:
        keep = np.sort(np.random.default_rng(seed).choice(keep, cap, replace=False))
    logits = np.asarray(logits, np.float64)[keep]
    return HeldOutSample(unit(np.asarray(features)[keep]).astype(np.float32),
                         np.asarray(labels)[keep].astype(np.int64),
                         np.argmax(logits, axis=1).astype(np.int64),
                         logits.max(axis=1).astype(np.float32))


def fit_calibration(train, heads: dict, num_classes: int, seed: int = 0,
                    held_out=None) -> Calibration:
    """Fits the text map, the text weight and each head's score scale on the trained classes,
    keeps a class-balanced sample of training photos to set offsets at enrolment, and checks
    per head whether the class means hold up against the head on held-out photos (step 7's
    fallback), keeping a sample of those photos for the enrolment check.

    Args:
      train: dict of numpy arrays over training examples: `labels` [N], `visual` [N, D] and,
        for text models, `listing` [N, D] (s0) and `semantic` [N, D] (s with its own image);
        `listing_visual` [N, D] (R s0) for a model with a learned listing projection: the text
        map is then fitted on it.
      heads: head name -> HeadRows; names from HEADS.
      held_out: the same for held-out examples of the trained classes (the eval split), or
        None: then no head goes on the same footing (nothing to check it on).
    """
    labels = np.asarray(train["labels"]).reshape(-1)
    keep = (labels >= 0) & (labels < num_classes)
    data = {k: np.asarray(train[k])[keep]
            for k in ("visual", "listing", "listing_visual", "semantic") if k in train}
    labels = labels[keep]
    visual = np.asarray(data["visual"], np.float64)
    mu_v, counts = class_means(visual, labels, num_classes)
    # sigma_v^2 with classes weighted equally (a head class must not set the tail's noise)
    dist = np.sum((visual - mu_v[labels]) ** 2, axis=1)
    per_class = np.bincount(labels, dist, minlength=num_classes)[:num_classes]
    multi = counts > 1
    photo_variance = float(np.mean(per_class[multi] / (counts[multi] - 1))) if multi.any() else 0.0
    text_map, text_variance, text_weight = None, float("inf"), 0.0
    text_input = "listing_visual" if "listing_visual" in data else "listing"
    if text_input in data:
        idx = balanced_subset(labels, seed=seed)
        text_map = fit_ridge(np.asarray(data[text_input], np.float64)[idx], mu_v[labels[idx]])
        text_variance = text_map.loo_mse
        text_weight = photo_variance / text_variance if text_variance > 0 else 0.0
    validation = balanced_subset(labels, VALIDATION_PER_CLASS, seed=seed + 1, cap=MAX_VALIDATION)
    alone = (ListingAlone.prepare(data, labels, mu_v, held_out, text_map, text_input,
                                  num_classes, seed + 3) if text_map is not None else None)
    head_calibrations = {}
    for name, head in heads.items():
        z = head_features(name, data)
        means = class_means(z, labels, num_classes)[0]
        own = head.logits(z)[np.arange(len(labels)), labels]  # [N] each photo's own logit
        cos_own = np.sum(unit(z) * unit(means[labels]), axis=1)
        slope = np.polyfit(cos_own, own, 1)[0] if np.ptp(cos_own) > 0 else 1.0
        held_out_top1, sample = None, None
        if held_out is not None:
            h_labels = np.asarray(held_out["labels"]).reshape(-1)
            h_keep = (h_labels >= 0) & (h_labels < num_classes)
            h_z = head_features(name, {k: np.asarray(v)[h_keep] for k, v in held_out.items()
                                       if k != "labels"})
            h_labels = h_labels[h_keep]
            h_logits = head.logits(h_z)
            held_out_top1 = {"photos": int(len(h_labels)),
                             "head": _top1(h_logits, h_labels),
                             "class_means": _top1(unit(h_z) @ unit(means).T, h_labels)}
            sample = held_out_sample(h_z, h_labels, h_logits, seed + 2)
        scale = float(max(slope, 1e-3))
        head_calibrations[name] = HeadCalibration(
            scale, unit(z[validation]).astype(np.float32),
            head.logits(z[validation]).max(axis=1).astype(np.float32),
            unit(means).astype(np.float32),
            held_out_top1, sample,
            None if alone is None else alone.figures(name, head, scale, means,
                                                     z[validation], labels[validation]))
    return Calibration(text_map, float(text_weight), photo_variance, float(text_variance),
                       head_calibrations, text_input)


@dataclasses.dataclass(frozen=True)
class ListingAlone:
    """Step 2 alone, simulated on trained classes: how often a SKU enrolled from nothing but
    its listing would be named (no photo of such a SKU exists to hold out). A group of trained
    classes with held-out photos (at most LISTING_CHECK_CLASSES, half the classes in a small
    model) is taken out: the text map is refitted without them (at the strength chosen on all),
    each gets the prototype `sku_prototypes` gives a SKU without photos, from one of its
    training listings, and its held-out photos are scored against the other trained classes and
    the group's prototypes under each rule (RULES; budget: DEFAULT_TRAINED_BUDGET of the other
    classes' validation photos). It is optimistic, not pessimistic: the group's words and
    (with `listing_weight`) the learned listing projection R were trained on those classes, only
    the ridge map is refitted without them. On IconShop-LT (docs/experiments.md, issue 25) it
    said 0.2 % / 0.6 % (same-footing / budget) where the 60 real new SKUs got 0.0 % / 0.5 %;
    on a model whose text was trained to match the photos (`contrastive_weight`,
    `listing_weight`) it says far too much (5.6 % / 2.3 % against 0.3 % / 0.3 %; 21.3 % against
    0.8 %), so no warning there does not mean listing-only SKUs will be named."""

    group: np.ndarray    # [G] the trained classes taken out
    visual: np.ndarray   # [G, D] their listing prototypes in the visual space (M' s0 or M' R s0)
    listing: np.ndarray  # [G, D] their listings' s0 (the semantic prototype)
    queries: dict        # "visual", "semantic": [Q, D] held-out photos of the group
    slots: np.ndarray    # [Q] each photo's class, as an index into `group`

    @classmethod
    def prepare(cls, data, labels, mu_v, held_out, text_map, text_input, num_classes, seed):
        """None when there is nothing to simulate on (no held-out photos or listings).
        `mu_v`: [C, D] the visual class means the text map is fitted to."""
        if held_out is None or "listing" not in data or "visual" not in held_out:
            return None
        h_labels = np.asarray(held_out["labels"]).reshape(-1)
        counts = np.bincount(labels, minlength=num_classes)[:num_classes]
        seen = h_labels[(h_labels >= 0) & (h_labels < num_classes)]
        h_counts = np.bincount(seen, minlength=num_classes)[:num_classes]
        candidates = np.flatnonzero((counts > 0) & (h_counts > 0))
        size = min(LISTING_CHECK_CLASSES, len(candidates), int(np.sum(counts > 0)) // 2)
        if size == 0:
            return None
        rng = np.random.default_rng(seed)
        group = np.sort(rng.choice(candidates, size, replace=False))
        rest = np.flatnonzero(~np.isin(labels, group))
        rest = rest[balanced_subset(labels[rest], seed=seed)]
        if len(rest) < 2:
            return None
        text = np.asarray(data[text_input], np.float64)
        refit = fit_ridge(text[rest], mu_v[labels[rest]], alphas=(text_map.alpha,))
        pick = np.array([rng.choice(np.flatnonzero(labels == c)) for c in group])
        query = np.flatnonzero(np.isin(h_labels, group))
        if len(query) > MAX_CHECK_PHOTOS:
            query = np.sort(rng.choice(query, MAX_CHECK_PHOTOS, replace=False))
        queries = {k: np.asarray(held_out[k], np.float64)[query]
                   for k in ("visual", "semantic") if k in held_out}
        return cls(group, refit(text[pick]), np.asarray(data["listing"], np.float64)[pick],
                   queries, np.searchsorted(group, h_labels[query]))

    def figures(self, name: str, head: HeadRows, scale: float, means, validation,
                validation_labels) -> dict | None:
        """rule -> {"named", "answered_trained", "photos", "classes"} for head `name`
        (`means`: its [C, D_in] class means, `validation`: its features of the validation
        photos); None when the held-out photos lack the head's input."""
        if name != "visual" and "semantic" not in self.queries:
            return None
        protos = unit(head_features(name, {"visual": self.visual, "semantic": self.listing}))
        z = head_features(name, self.queries)
        others = np.flatnonzero(~np.isin(np.arange(len(means)), self.group))
        enrolled_cos = scale * unit(z) @ protos.T
        figures = {}
        for rule in RULES:
            if rule == "same-footing":  # every class by a * cos, b = 0
                trained, enrolled = scale * unit(z) @ unit(means[others]).T, enrolled_cos
            else:
                keep = ~np.isin(validation_labels, self.group)
                v = np.asarray(validation, np.float64)[keep]
                offset = budget_offset(scale * np.max(unit(v) @ protos.T, axis=1),
                                       head.logits(v)[:, others].max(axis=1),
                                       DEFAULT_TRAINED_BUDGET)
                trained, enrolled = head.logits(z)[:, others], enrolled_cos + offset
            to_trained = enrolled.max(axis=1) <= trained.max(axis=1)
            named = ~to_trained & (np.argmax(enrolled, axis=1) == self.slots)
            figures[rule] = {"named": float(np.mean(named)),
                             "answered_trained": float(np.mean(to_trained)),
                             "photos": int(len(z)), "classes": int(len(self.group))}
        return figures


# ---------------------------------------------------------------------------------------------
# Prototypes of catalogue SKUs


def sku_prototypes(calibration: Calibration, photo_visual, photo_semantic, listing,
                   use_text: bool = True, listing_visual=None) -> dict:
    """Prototypes of one SKU per head input.

    Args:
      photo_visual: [k, D] its photos' visual embeddings (k may be 0).
      photo_semantic: [k, D] the semantic embedding of its listing with each photo as query.
      listing: [D] s0 of its listing, or None (no text branch).
      use_text: False = photos only (the "without text" setting).
      listing_visual: [D] R s0 of its listing; needed (with a listing) when the calibration's
        text map reads it (`text_input` "listing_visual").

    Returns {"visual": [D], and with a listing "semantic": [D], "fused": [2D]}; raises
    ValueError for a SKU with neither photos nor usable text.
    """
    k = len(photo_visual)
    has_text = use_text and listing is not None and calibration.text_map is not None
    if k == 0 and not has_text:
        raise ValueError("no photos and no listing text the model can read")
    parts, weights = [], []
    if k:
        parts.append(np.mean(np.asarray(photo_visual, np.float64), axis=0))
        weights.append(float(k))
    if has_text:
        text = listing
        if calibration.text_input == "listing_visual":
            if listing_visual is None:
                raise ValueError("the calibration's text map reads R s0 (a model with a "
                                 "learned listing projection): pass listing_visual")
            text = listing_visual
        parts.append(calibration.text_map(np.asarray(text, np.float64)[None])[0])
        weights.append(calibration.text_weight if k else 1.0)
    visual = sum(w * p for w, p in zip(weights, parts)) / sum(weights)
    out = {"visual": visual}
    if listing is not None:
        semantic = (np.mean(np.asarray(photo_semantic, np.float64), axis=0) if k
                    else np.asarray(listing, np.float64))
        out["semantic"] = semantic
        out["fused"] = np.concatenate([visual, semantic])
    return out


@dataclasses.dataclass(frozen=True)
class EnrolledScores:
    """One head's enrolled classes: logits = scale * cos(z, prototypes) + offset."""

    prototypes: np.ndarray  # [N, D_in], unit rows
    scale: float
    offset: float
    # [C, D_in] unit class means: the trained classes are scored `scale * cos(z, mean)` too
    # (step 6), replacing the trained head's logits; None: the trained head's logits stay.
    trained_prototypes: np.ndarray | None = None

    def logits(self, z):
        return self.scale * unit(z) @ self.prototypes.T + self.offset

    def trained_logits(self, z, head: HeadRows):
        """The trained classes' logits next to these enrolled ones."""
        if self.trained_prototypes is None:
            return head.logits(z)
        return self.scale * unit(z) @ np.asarray(self.trained_prototypes, np.float64).T


def enrolled_scores(calibration: Calibration, head: str, prototypes,
                    trained_budget: float = DEFAULT_TRAINED_BUDGET,
                    scoring: str = "auto") -> EnrolledScores:
    """How one head scores its enrolled classes (all of them, old and new). On the same footing
    (step 6; `scoring` "same-footing": always, "budget": never, "auto": where the calibration's
    held-out check of the class means passed, step 7's fallback; `enrolment_check` chooses
    between the two rules on their measured trade-off): like the trained classes' means,
    b = 0. Otherwise the offset b is the lowest such that at most `trained_budget` of the
    validation photos would be answered with an enrolled class. No enrolled class: nothing
    changes."""
    if not 0.0 <= trained_budget < 1.0:
        raise ValueError(f"trained_budget={trained_budget!r}: must be in [0, 1)")
    if scoring not in SCORINGS:
        raise ValueError(f"scoring={scoring!r}: must be one of {SCORINGS}")
    h = calibration.heads[head]
    prototypes = unit(prototypes)
    if len(prototypes) == 0:
        return EnrolledScores(prototypes, h.scale, 0.0)
    same = h.same_footing if scoring == "auto" else scoring == "same-footing"
    if same:
        return EnrolledScores(prototypes, h.scale, 0.0, h.class_means)
    best_new = h.scale * np.max(h.validation.astype(np.float64) @ prototypes.T, axis=1)
    return EnrolledScores(prototypes, h.scale, budget_offset(best_new, h.trained_max,
                                                             trained_budget))


def budget_offset(best_new, trained_max, trained_budget: float) -> float:
    """The lowest offset b such that at most `trained_budget` of photos would be answered with
    an enrolled class (`best_new`: their best enrolled score without b, `trained_max`: their
    best trained logit)."""
    margin = np.asarray(best_new, np.float64) - trained_max  # > -b: an enrolled class wins
    limit = float(np.quantile(margin, 1.0 - trained_budget, method="higher"))
    return -limit - 1e-6 * (1.0 + abs(limit))  # ties go to the trained class


# ---------------------------------------------------------------------------------------------
# Saving


def save_calibration(calibration: Calibration, path) -> None:
    arrays = {"version": CALIBRATION_VERSION, "text_weight": calibration.text_weight,
              "photo_variance": calibration.photo_variance,
              "text_variance": calibration.text_variance}
    if calibration.text_map is not None:
        m = calibration.text_map
        arrays.update({"text.coef": m.coef, "text.intercept": m.intercept,
                       "text.alpha": m.alpha, "text.loo_mse": m.loo_mse,
                       "text.input": calibration.text_input})
    for name, h in calibration.heads.items():
        arrays.update({f"{name}.scale": h.scale, f"{name}.validation": h.validation,
                       f"{name}.trained_max": h.trained_max,
                       f"{name}.class_means": h.class_means})
        if h.held_out:
            arrays.update({f"{name}.held_out.{k}": v for k, v in h.held_out.items()})
        if h.held_out_sample is not None:
            arrays.update({f"{name}.check.{f.name}": getattr(h.held_out_sample, f.name)
                           for f in dataclasses.fields(HeldOutSample)})
        for rule, figures in (h.listing_only or {}).items():
            arrays.update({f"{name}.listing_only.{rule}.{k}": v for k, v in figures.items()})
    np.savez(path, **arrays)


def load_calibration(path) -> Calibration | None:
    """The saved calibration, or None when it was saved by a version not in
    READABLE_VERSIONS."""
    with np.load(path) as data:
        if "version" not in data or int(data["version"]) not in READABLE_VERSIONS:
            return None
        text_map = None
        if "text.coef" in data:
            text_map = RidgeMap(data["text.coef"], data["text.intercept"],
                                float(data["text.alpha"]), float(data["text.loo_mse"]))
        heads = {}
        for n in HEADS:
            if f"{n}.scale" not in data:
                continue
            held_out = {k: data[f"{n}.held_out.{k}"].item()
                        for k in ("photos", "head", "class_means")
                        if f"{n}.held_out.{k}" in data} or None
            fields = [f.name for f in dataclasses.fields(HeldOutSample)]
            sample = (HeldOutSample(*(data[f"{n}.check.{f}"] for f in fields))
                      if f"{n}.check.features" in data else None)
            listing_only = {}
            for key in data.files:
                if key.startswith(f"{n}.listing_only."):
                    rule, field = key[len(f"{n}.listing_only."):].rsplit(".", 1)
                    listing_only.setdefault(rule, {})[field] = data[key].item()
            heads[n] = HeadCalibration(
                float(data[f"{n}.scale"]), data[f"{n}.validation"], data[f"{n}.trained_max"],
                data[f"{n}.class_means"], held_out, sample, listing_only or None)
        # files written before the learned projection: the map read s0
        text_input = str(data["text.input"]) if "text.input" in data else "listing"
        return Calibration(text_map, float(data["text_weight"]), float(data["photo_variance"]),
                           float(data["text_variance"]), heads, text_input)
