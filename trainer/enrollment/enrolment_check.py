"""The enrolment check: how often enrolled SKUs would be named, and what the trained classes
would lose, measured at enrolment on data it has, for each scoring rule (`prototypes.RULES`).

Per head and rule:
  trained side   on held-out photos of the trained classes (`prototypes.HeldOutSample`, the
                 eval split the calibration was fitted with): top-1 of the trained head before
                 enrolment, top-1 with the enrolled classes present, the drop, and the share of
                 those photos answered with an enrolled class;
  enrolled side  leave-one-out over the catalogue photos of the SKUs enrolled with 2+ photos:
                 each photo is scored against every class, its SKU enrolled from its other
                 photos (+ its listing when text is used) and every other SKU as enrolled (the
                 offset b of the full enrolment); the share named correctly (top-1), and the
                 share answered with a trained class. None when no SKU has 2+ photos: then
                 `own_photos` scores the photos each prototype was built from, an upper bound
                 (not an estimate) of how often the enrolled SKUs are named.
  listing alone  SKUs enrolled without a photo have none to hold out: for them the check reports
                 the calibration's simulation (`prototypes.ListingAlone`: trained classes taken
                 out of the text map and enrolled from one of their listings, scored on their
                 held-out photos).
`choose` picks `auto`'s rule on that trade-off, `warnings` names enrolled SKUs that would almost
never be answered (a head that serves queries, under the rule it uses), `describe` prints it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from sicot.trainer.enrollment import prototypes
from sicot.trainer.enrollment.prototypes import EnrolledScores, HeadCalibration, HeadRows

DEFAULT_MAX_TRAINED_DROP = 0.01  # trained top-1 `auto` may give up for enrolled classes
NEVER_ANSWERED = 0.01            # enrolled SKUs named for less than this share: a warning
MAX_QUERY_PHOTOS = 1000          # catalogue photos scored (the enrolment stays fast)
MAX_QUERY_PHOTOS_PER_SKU = 5    # fewer when many SKUs share MAX_QUERY_PHOTOS
# the heads that answer queries (`sicot.trainer.export.saved_model`), and which queries
SERVING_HEADS = {"visual": "image-only queries", "fused": "image + text queries"}


@dataclasses.dataclass(frozen=True)
class CatalogueQueries:
    """Catalogue photos scored against the enrolled classes, each with the prototype its SKU
    has when the photo is scored (built without it: leave-one-out; or with it: own photos)."""

    features: dict       # head -> [Q, D_in] the photos' head features
    prototypes: dict     # head -> [Q, D_in] their SKU's prototype
    slots: np.ndarray    # [Q] their SKU's enrolled class (0 = the first enrolled class)
    skus: int            # SKUs they come from
    capped: bool         # True when photos were left out (MAX_QUERY_PHOTOS*)

    def __len__(self):
        return len(self.slots)


@dataclasses.dataclass(frozen=True)
class EnrolledSku:
    """What the check needs of one enrolled SKU (`catalogue.SkuEmbedding` fields)."""

    slot: int                   # its enrolled class
    visual: np.ndarray          # [k, D]
    semantic: np.ndarray        # [k, D] (text models)
    listing: np.ndarray | None  # [D] s0 (text models)
    listing_visual: np.ndarray | None
    text_used: bool


def _features(head: str, visual, semantic) -> np.ndarray:
    return prototypes.head_features(head, {"visual": visual, "semantic": semantic})


def catalogue_queries(calibration, skus: list, heads: list, leave_one_out: bool,
                      rows: dict | None = None) -> CatalogueQueries | None:
    """Leave-one-out queries over the SKUs with 2+ photos (`leave_one_out`), or every photo
    scored against its SKU's enrolled prototype `rows[head][slot]` (own photos); None when
    there is no such photo."""
    skus = [s for s in skus if len(s.visual) >= (2 if leave_one_out else 1)]
    features, protos = {h: [] for h in heads}, {h: [] for h in heads}
    slots, used, capped = [], 0, False
    # spread over as many SKUs as the cap allows
    per_sku = max(1, min(MAX_QUERY_PHOTOS_PER_SKU, MAX_QUERY_PHOTOS // max(len(skus), 1)))
    for sku in skus:
        room = MAX_QUERY_PHOTOS - len(slots)
        if room <= 0:
            capped = True
            break
        take = min(len(sku.visual), per_sku, room)
        capped |= take < len(sku.visual)
        used += 1
        has_text = sku.listing is not None
        for i in range(take):
            semantic_i = sku.semantic[i:i + 1] if has_text else None
            if leave_one_out:
                others = np.arange(len(sku.visual)) != i
                proto = prototypes.sku_prototypes(
                    calibration, sku.visual[others],
                    sku.semantic[others] if has_text else sku.semantic, sku.listing,
                    use_text=sku.text_used, listing_visual=sku.listing_visual)
            else:
                proto = {h: rows[h][sku.slot] for h in heads}
            for h in heads:
                features[h].append(_features(h, sku.visual[i:i + 1], semantic_i)[0])
                protos[h].append(np.asarray(proto[h], np.float64))
            slots.append(sku.slot)
    if not slots:
        return None
    return CatalogueQueries({h: np.stack(v) for h, v in features.items()},
                            {h: np.stack(v) for h, v in protos.items()},
                            np.asarray(slots, np.int64), used, capped)


def trained_side(head: HeadCalibration, scores: EnrolledScores) -> dict | None:
    """Top-1 of the trained classes on held-out photos before and after enrolment (None when
    the calibration has no held-out photos)."""
    sample = head.held_out_sample
    if sample is None or len(sample.labels) == 0:
        return None
    z = np.asarray(sample.features, np.float64)
    if scores.trained_prototypes is None:
        trained_top, trained_max = sample.head_top, np.asarray(sample.head_max, np.float64)
    else:
        trained = scores.scale * z @ np.asarray(scores.trained_prototypes, np.float64).T
        trained_top, trained_max = np.argmax(trained, axis=1), trained.max(axis=1)
    enrolled_max = (scores.logits(z).max(axis=1) if len(scores.prototypes)
                    else np.full(len(z), -np.inf))
    to_enrolled = enrolled_max > trained_max  # ties go to the trained class (argmax order)
    before = float(np.mean(sample.head_top == sample.labels))
    after = float(np.mean(~to_enrolled & (trained_top == sample.labels)))
    return {"photos": int(len(z)), "top1_before": before, "top1_after": after,
            "drop": before - after, "answered_enrolled": float(np.mean(to_enrolled))}


def enrolled_side(queries: CatalogueQueries | None, head: str, scores: EnrolledScores,
                  rows: HeadRows) -> dict | None:
    """The share of catalogue queries named with their own SKU (top-1 over every class), and
    the share answered with a trained class."""
    if queries is None or len(scores.prototypes) == 0:
        return None
    z = queries.features[head]
    trained_max = scores.trained_logits(z, rows).max(axis=1)
    enrolled = scores.logits(z)
    own = scores.scale * np.sum(prototypes.unit(z) * prototypes.unit(queries.prototypes[head]),
                                axis=1) + scores.offset
    enrolled[np.arange(len(z)), queries.slots] = own
    enrolled_max = enrolled.max(axis=1)
    named = (np.argmax(enrolled, axis=1) == queries.slots) & (enrolled_max > trained_max)
    return {"photos": len(queries), "skus": queries.skus, "capped": queries.capped,
            "named": float(np.mean(named)),
            "answered_trained": float(np.mean(enrolled_max <= trained_max))}


def choose(figures: dict, scoring: str, fallback: str, max_trained_drop: float,
           listing_alone: dict | None = None) -> tuple[str, str]:
    """(rule, reason) for one head. `figures`: rule -> {"trained", "enrolled", "own_photos"}
    (`check_head`); `fallback`: the rule of the calibration's held-out check of the class
    means, used when the trade-off cannot be measured; `listing_alone`: rule -> the
    calibration's listing-alone simulation, the enrolled side when no enrolled SKU has a photo."""
    if scoring != "auto":
        return scoring, f"--scoring {scoring}"
    named = {r: f["enrolled"]["named"] for r, f in figures.items() if f["enrolled"]}
    source = ""
    if listing_alone and all(f["enrolled"] is None and f["own_photos"] is None
                             for f in figures.values()):
        named = {r: listing_alone[r]["named"] for r in figures if r in listing_alone}
        source = " (simulated: no enrolled SKU has a photo)"
    measured = {r: f for r, f in figures.items() if f["trained"] and r in named}
    if len(measured) < len(figures):
        missing = ("no enrolled SKU has 2+ photos (leave-one-out not measurable)"
                   if len(named) < len(figures) else "no held-out photos of the trained classes")
        return fallback, (f"{missing}: {fallback} by the held-out check of the class means "
                          f"(within {100 * prototypes.SAME_FOOTING_TOLERANCE:g} points of "
                          f"the trained head: same-footing, else budget)")
    allowed = [r for r, f in measured.items() if f["trained"]["drop"] <= max_trained_drop + 1e-9]
    if not allowed:
        rule = min(measured, key=lambda r: measured[r]["trained"]["drop"])
        return rule, (f"no rule keeps the trained top-1 drop within "
                      f"{100 * max_trained_drop:.1f} points: {rule} loses least "
                      f"({100 * measured[rule]['trained']['drop']:.1f} points)")
    rule = max(allowed, key=lambda r: (named[r], -measured[r]["trained"]["drop"]))
    others = ", ".join(f"{r} {_pct(named[r])}"
                       + ("" if r in allowed else
                          f" but drops trained top-1 {100 * f['trained']['drop']:.1f} points")
                       for r, f in measured.items() if r != rule)
    return rule, (f"enrolled SKUs named most often within a trained top-1 drop of "
                  f"{100 * max_trained_drop:.1f} points{source}: {rule} {_pct(named[rule])}"
                  + (f" (vs {others})" if others else ""))


def check_head(head: str, calibration: HeadCalibration, rule_scores: dict, rows: HeadRows,
               leave_one_out: CatalogueQueries | None, own_photos: CatalogueQueries | None,
               scoring: str, max_trained_drop: float, listing_alone_skus: int = 0) -> dict:
    """The figures of every rule (`rule_scores`: rule -> EnrolledScores) and the chosen rule;
    with SKUs enrolled from the listing alone, the calibration's simulation of them."""
    listing_alone = calibration.listing_only if listing_alone_skus else None
    figures = {r: {"trained": trained_side(calibration, s),
                   "enrolled": enrolled_side(leave_one_out, head, s, rows),
                   "own_photos": (enrolled_side(own_photos, head, s, rows)
                                  if leave_one_out is None else None)}
               for r, s in rule_scores.items()}
    fallback = "same-footing" if calibration.same_footing else "budget"
    chosen, reason = choose(figures, scoring, fallback, max_trained_drop, listing_alone)
    out = {"rules": figures, "chosen": chosen, "reason": reason}
    if listing_alone_skus:
        # None: a calibration without the simulation (no held-out photos, or older)
        out["listing_alone"] = listing_alone
    return out


def check_enrolment(calibration, head_rows: dict, rows: dict, skus: list,
                    trained_budget: float = prototypes.DEFAULT_TRAINED_BUDGET,
                    scoring: str = "auto",
                    max_trained_drop: float = DEFAULT_MAX_TRAINED_DROP) -> tuple[dict, dict]:
    """Each head's EnrolledScores under the rule the check chose (or `scoring` forced), and
    the check: both rules' figures per head, the chosen rule and why.

    Args:
      calibration: `prototypes.Calibration` of the trained model.
      head_rows: head name -> `prototypes.HeadRows` of the trained classes.
      rows: head name -> [N, D_in] prototypes of every enrolled class (slot order).
      skus: `EnrolledSku` of the SKUs enrolled now (their photos are the queries).
    """
    heads = list(rows)
    loo = catalogue_queries(calibration, skus, heads, leave_one_out=True)
    own = (catalogue_queries(calibration, skus, heads, leave_one_out=False, rows=rows)
           if loo is None else None)
    check = {"max_trained_drop": max_trained_drop, "scoring": scoring,
             "leave_one_out": {"photos": 0 if loo is None else len(loo),
                               "skus": 0 if loo is None else loo.skus,
                               "capped": bool(loo is not None and loo.capped),
                               "skus_with_2_photos": sum(len(s.visual) >= 2 for s in skus)},
             "listing_alone": {"skus": sum(len(s.visual) == 0 for s in skus)},
             "heads": {}}
    if not any(len(r) for r in rows.values()):  # nothing enrolled: nothing changes
        return {h: prototypes.enrolled_scores(calibration, h, rows[h], trained_budget, scoring)
                for h in heads}, check
    scores = {}
    for h in heads:
        candidates = {r: prototypes.enrolled_scores(calibration, h, rows[h], trained_budget, r)
                      for r in prototypes.RULES}
        check["heads"][h] = check_head(h, calibration.heads[h], candidates, head_rows[h], loo,
                                       own, scoring, max_trained_drop,
                                       check["listing_alone"]["skus"])
        scores[h] = candidates[check["heads"][h]["chosen"]]
    return scores, check


def warnings(check: dict, classes: int) -> list[str]:
    """A warning per serving head whose chosen rule would name the enrolled SKUs for under
    NEVER_ANSWERED of their leave-one-out photos, or, where that is not measurable, of the
    very photos they were enrolled from (an upper bound: under it, they are surely not
    named); and one where SKUs enrolled from their listing alone would be named for under
    NEVER_ANSWERED of their photos by the calibration's simulation. `classes`: trained +
    enrolled (for the chance level)."""
    out = []
    for head, queries in SERVING_HEADS.items():
        if head in check["heads"]:
            out.extend(_photo_warning(check["heads"][head], head, queries, classes))
            out.extend(_listing_alone_warning(check, head, queries, classes))
    return out


def _photo_warning(h: dict, head: str, queries: str, classes: int) -> list[str]:
    figures = h["rules"][h["chosen"]]
    measured, what = figures["enrolled"], "held-out catalogue photos (leave-one-out)"
    if measured is None:
        measured, what = figures["own_photos"], "own catalogue photos they were enrolled from"
    if measured is None or measured["named"] >= NEVER_ANSWERED:
        return []
    better = [r for r, f in h["rules"].items() if r != h["chosen"]
              and (f["enrolled"] or f["own_photos"] or {}).get("named", 0.0)
              >= NEVER_ANSWERED]
    return [f"enrolled SKUs would almost never be answered: {queries} ({head} head, "
            f"{h['chosen']} scoring) name them for {_pct(measured['named'])} of their {what} "
            f"({measured['photos']} photos of {_skus(measured['skus'])}; chance "
            f"{_pct(1.0 / max(classes, 1))}), {_pct(measured['answered_trained'])} go to a "
            f"trained class" + _hint(h["chosen"], measured, better)]


def _listing_alone_warning(check: dict, head: str, queries: str, classes: int) -> list[str]:
    h, skus = check["heads"][head], check.get("listing_alone", {}).get("skus", 0)
    figures = (h.get("listing_alone") or {}).get(h["chosen"])
    if not skus or figures is None or figures["named"] >= NEVER_ANSWERED:
        return []
    return [f"SKUs enrolled from their listing alone would almost never be answered: {queries} "
            f"({head} head, {h['chosen']} scoring) name such SKUs for {_pct(figures['named'])} "
            f"of their photos, simulated on {figures['classes']} trained classes enrolled from "
            f"one of their listings ({figures['photos']} held-out photos; chance "
            f"{_pct(1.0 / max(classes, 1))}); {_skus(skus)} enrolled so: add photos to them"]


def _hint(chosen: str, measured: dict, better: list) -> str:
    if better:
        return f"; --scoring {better[0]} would name them more often"
    if measured["answered_trained"] < 0.5:  # lost to other enrolled SKUs, mostly
        return "; they lose to other enrolled SKUs: look for duplicate or look-alike SKUs"
    if chosen == "same-footing":
        return "; more photos per SKU may help"
    return "; a larger --trained-budget or more photos per SKU may help"


def _pct(share) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


def _points(drop: float) -> str:
    change = -100 * drop
    return f"{0.0 if abs(change) < 0.05 else change:+.1f} points"


def _skus(n: int) -> str:
    return f"{n} SKU" if n == 1 else f"{n} SKUs"


def describe(check: dict) -> list[str]:
    """A short readable block: per head and rule, the trained and enrolled figures."""
    lines = [f"enrolment check (allowed trained top-1 drop {100 * check['max_trained_drop']:.1f} "
             f"points):"]
    for head, h in check["heads"].items():
        use = SERVING_HEADS.get(head, "not served alone")
        lines.append(f"  {head} head ({use}): {h['chosen']}, {h['reason']}")
        for rule, f in h["rules"].items():
            t, e, own = f["trained"], f["enrolled"], f["own_photos"]
            trained = ("trained top-1 not measurable (no held-out photos)" if t is None else
                       f"trained top-1 {_pct(t['top1_before'])} -> {_pct(t['top1_after'])} "
                       f"({_points(t['drop'])}, {_pct(t['answered_enrolled'])} of "
                       f"{t['photos']} held-out photos to enrolled)")
            if e is not None:
                enrolled = (f"enrolled named {_pct(e['named'])} of {e['photos']} photos of "
                            f"{_skus(e['skus'])} (leave-one-out), "
                            f"{_pct(e['answered_trained'])} to trained")
            elif own is not None:
                enrolled = (f"enrolled named: not measurable (no SKU with 2+ photos); "
                            f"{_pct(own['named'])} of their own {own['photos']} photos "
                            f"(an upper bound)")
            else:
                enrolled = "enrolled named: not measurable (no enrolled SKU has photos)"
            mark = "*" if rule == h["chosen"] else " "
            lines.append(f"   {mark}{rule:<13} {trained}; {enrolled}")
        if "listing_alone" in h:
            lines.append("    " + _describe_listing_alone(h["listing_alone"],
                                                        check["listing_alone"]["skus"]))
    return lines


def _describe_listing_alone(figures: dict | None, skus: int) -> str:
    what = f"{_skus(skus)} from the listing alone"
    if figures is None:
        return (f"{what}: not measurable (the calibration has no held-out photos or predates "
                f"the listing-alone simulation)")
    any_rule = next(iter(figures.values()))
    return (f"{what}: named " + ", ".join(f"{r} {_pct(f['named'])}" for r, f in figures.items())
            + f" (simulated: {any_rule['classes']} trained classes, {any_rule['photos']} "
              f"held-out photos)")
