"""Error analysis a person can look at: an HTML page with the images.

`write_report(out_dir, ...)` writes `out_dir/report.html` with
  * the band table (top-1 / top-5 per query mode, overall and many / medium / few);
  * `accuracy_vs_train_count.png`: per-class image-only (and image + text) top-1 against the
    number of training images of the class (log scale, band edges marked);
  * the most confused class pairs (true class -> predicted class, image-only top-1), each with
    thumbnails of misrecognised test photos and one test photo of the class it was taken for;
  * TFMA's multi-class confusion matrix metrics (`MultiClassConfusionMatrixPlot` on the
    image-only output): the largest off-diagonal cells and the matrix's own accuracy, which
    must equal the table's image-only top-1 (a cross-check between two code paths).
`sicot evaluate --report DIR` runs TFMA for that part (`tfma_confusion`); the pipeline's
`ErrorReport` component reads it from the Evaluator's output (`confusion_from_eval_result`).
The page is self-contained in its folder (relative image paths).
"""
from __future__ import annotations

import collections
import html
import io
import json
import os
from typing import Dict, List, Optional, Sequence

from sicot import contract

REPORT_HTML = "report.html"
ACCURACY_PNG = "accuracy_vs_train_count.png"
THUMBS_DIR = "thumbs"
CONFUSION_METRIC = "MultiClassConfusionMatrixPlot"
IMAGE_ONLY = contract.IMAGE_ONLY


def confused_pairs(labels: Sequence[str], top1: Sequence[str], limit: int = 10):
    """[(true, predicted, count, [record indices])] most frequent wrong pairs first."""
    indices: Dict[tuple, List[int]] = collections.defaultdict(list)
    for i, (label, predicted) in enumerate(zip(labels, top1)):
        if label != predicted:
            indices[(label, predicted)].append(i)
    pairs = sorted(indices.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [(t, p, len(ix), ix) for (t, p), ix in pairs[:limit]]


def thumbnail(image_bytes: bytes, path: str, size: int = 96) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as img:
        img = img.convert("RGB")
        img.thumbnail((size, size))
        img.save(path, format="PNG")
    return path


def plot_accuracy_vs_count(per_class: dict, band_edges: Optional[Sequence[int]],
                           path: str) -> str:
    """Per-class top-1 against training images (log x), one colour per query mode; band edges
    dashed when known (classes without a training count are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for mode, colour in ((contract.IMAGE_ONLY, "tab:blue"), (contract.IMAGE_TEXT, "tab:orange")):
        rows = per_class.get(mode) or {}
        pts = [(max(r["train_count"], 1), r["top1"]) for r in rows.values()
               if r["top1"] is not None and r.get("train_count") is not None]
        if not pts:
            continue
        x, y = np.array(pts, dtype=float).T
        ax.scatter(x, y, s=14, alpha=0.45, color=colour, label=f"{mode} (per class)")
        # mean top-1 in log-spaced bins of training count
        edges = np.unique(np.geomspace(x.min(), x.max() + 1, 8).round())
        idx = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
        centres, means = [], []
        for b in range(len(edges) - 1):
            if np.any(idx == b):
                centres.append(np.sqrt(edges[b] * edges[b + 1]))
                means.append(y[idx == b].mean())
        ax.plot(centres, means, color=colour, lw=2, label=f"{mode} (binned mean)")
    for edge in band_edges or ():
        ax.axvline(edge, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training images of the class (log scale; dashed: band edges)")
    ax.set_ylabel("top-1 accuracy of the class")
    ax.set_title("Accuracy against training count")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _matrix_entries(plot_value: dict) -> List[tuple]:
    matrices = plot_value.get("multiClassConfusionMatrixAtThresholds", {}).get("matrices", [])
    if not matrices:
        return []
    return [(int(e.get("actualClassId", 0)), int(e.get("predictedClassId", 0)),
             float(e.get("numWeightedExamples", 0.0))) for e in matrices[0].get("entries", [])]


def confusion_from_eval_result(eval_output_dir: str, class_names: Sequence[str],
                               output_name: str = IMAGE_ONLY,
                               model_name: Optional[str] = None) -> Optional[dict]:
    """TFMA's MultiClassConfusionMatrixPlot of the overall slice, as
    {"accuracy", "examples", "top_confusions": [(true, predicted, count)], "classes"}."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(eval_output_dir, model_name=model_name)
    for slice_key, plots in result.plots:
        if slice_key:
            continue
        entries = _matrix_entries(plots.get(output_name, {}).get("", {}))
        if not entries:
            return None
        total = sum(n for _, _, n in entries)
        correct = sum(n for a, p, n in entries if a == p)

        def name(i):
            return class_names[i] if 0 <= i < len(class_names) else f"id {i}"

        off = sorted(((name(a), name(p), int(n)) for a, p, n in entries if a != p and n > 0),
                     key=lambda t: (-t[2], t[0], t[1]))
        return {"accuracy": correct / total if total else None, "examples": int(total),
                "top_confusions": off[:15],
                "classes": len({a for a, _, _ in entries} | {p for _, p, _ in entries})}
    return None


def tfma_confusion(saved_model_dir: str, records: Sequence[dict], work_dir: str,
                   class_names: Sequence[str]) -> Optional[dict]:
    """Runs TFMA (the exported `eval_examples` + `transform_features` signatures, as the
    pipeline's Evaluator does) over the records with MultiClassConfusionMatrixPlot."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    os.makedirs(work_dir, exist_ok=True)
    data = os.path.join(work_dir, "examples.tfrecord")
    with tf.io.TFRecordWriter(data) as writer:
        for r in records:
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
                for k, v in r.items() if isinstance(v, bytes)})).SerializeToString())
    eval_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=contract.EVAL_SIGNATURE,
                                    preprocessing_function_names=[contract.TRANSFORM_SIGNATURE],
                                    label_keys={mode: contract.LABEL_XF
                                                for mode in contract.QUERY_MODES})],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(output_names=[IMAGE_ONLY], metrics=[
            tfma.MetricConfig(class_name=CONFUSION_METRIC)])])
    model = tfma.default_eval_shared_model(eval_saved_model_path=saved_model_dir,
                                           eval_config=eval_config)
    out = os.path.join(work_dir, "tfma")
    tfma.run_model_analysis(eval_shared_model=model, eval_config=eval_config,
                            data_location=data, output_path=out)
    return confusion_from_eval_result(out, class_names)


def class_names_of(saved_model_dir: str) -> List[str]:
    """The class names (class id order) of an export: every class, enrolled ones too
    (`export.CLASS_NAMES_FILE`); for an export older than that file, the Transform's label
    vocabulary in assets/label (trained classes only)."""
    import tensorflow as tf

    from sicot.trainer.export.saved_model import CLASS_NAMES_FILE

    names = os.path.join(saved_model_dir, CLASS_NAMES_FILE)
    if tf.io.gfile.exists(names):
        with tf.io.gfile.GFile(names, "r") as f:
            return json.loads(f.read())
    path = os.path.join(saved_model_dir, "assets", contract.LABEL_VOCAB_NAME)
    with tf.io.gfile.GFile(path, "r") as f:
        return [line.rstrip("\n") for line in f]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def write_report(out_dir: str, report: dict, records: Sequence[dict],
                 predictions: Dict[str, List[List[str]]], confusion: Optional[dict] = None,
                 max_pairs: int = 10, thumbs_per_pair: int = 4) -> str:
    """Writes report.html (+ PNG and thumbnails) into out_dir; returns the page's path."""
    os.makedirs(os.path.join(out_dir, THUMBS_DIR), exist_ok=True)
    esc = html.escape
    labels = [r[contract.LABEL_KEY].decode("utf-8") for r in records]
    top1 = [p[0] for p in predictions[IMAGE_ONLY]]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SICoT error analysis</title>",
        "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td.l,th.l{text-align:left}img.t{margin:2px;border:1px solid #888}</style></head><body>",
        "<h1>SICoT error analysis</h1>",
        f"<p id='source'>model <code>{esc(str(report.get('saved_model', '')))}</code>, "
        f"data <code>{esc(str(report.get('data', '')))}</code>, split "
        f"<b>{esc(str(report.get('split', 'test')))}</b>: {report['records']} records; "
        + (f"bands by training images: few &lt; {report['band_edges'][0]} &le; medium &le; "
           f"{report['band_edges'][1]} &lt; many.</p>" if report.get("band_edges")
           else "bands as the model's Transform assigns them.</p>"),
        "<h2>Accuracy by band</h2><table id='bands'><tr><th class='l'>query</th>"
        "<th class='l'>band</th><th>n</th><th>top-1</th><th>top-5</th></tr>"]
    for mode, bands in report["results"].items():
        for band, r in bands.items():
            parts.append(f"<tr><td class='l'>{esc(mode)}</td><td class='l'>{esc(band)}</td>"
                         f"<td>{r['count']}</td><td>{_pct(r['top1'])}</td>"
                         f"<td>{_pct(r['top5'])}</td></tr>")
    parts.append("</table>")
    plot_accuracy_vs_count(report["per_class"], report.get("band_edges"),
                           os.path.join(out_dir, ACCURACY_PNG))
    parts.append(f"<h2>Accuracy against training count</h2><img id='plot' src='{ACCURACY_PNG}' "
                 f"alt='per-class accuracy against training count' width='700'>")

    first_of_class: Dict[str, int] = {}
    for i, label in enumerate(labels):
        first_of_class.setdefault(label, i)
    pairs = confused_pairs(labels, top1, max_pairs)
    parts.append("<h2>Most confused class pairs (image only)</h2>")
    if not pairs:
        parts.append("<p id='pairs'>No image-only errors on this split.</p>")
    else:
        parts.append("<table id='pairs'><tr><th class='l'>true class</th>"
                     "<th class='l'>recognised as</th><th>errors</th><th>of the class</th>"
                     "<th class='l'>misrecognised photos</th>"
                     "<th class='l'>a photo of the class it was taken for</th></tr>")
        class_sizes = collections.Counter(labels)
        for n, (true, predicted, count, indices) in enumerate(pairs):
            thumbs = []
            for j, i in enumerate(indices[:thumbs_per_pair]):
                name = f"{THUMBS_DIR}/pair{n}_{j}.png"
                thumbnail(records[i][contract.IMAGE_KEY], os.path.join(out_dir, name))
                thumbs.append(f"<img class='t' src='{name}' alt='{esc(true)}' "
                              f"title='{esc(records[i][contract.RECORD_ID_KEY].decode())}'>")
            reference = "(no test photo of that class)"
            if predicted in first_of_class:
                name = f"{THUMBS_DIR}/pair{n}_ref.png"
                thumbnail(records[first_of_class[predicted]][contract.IMAGE_KEY],
                          os.path.join(out_dir, name))
                reference = f"<img class='t' src='{name}' alt='{esc(predicted)}'>"
            parts.append(f"<tr><td class='l'>{esc(true)}</td><td class='l'>{esc(predicted)}</td>"
                         f"<td>{count}</td><td>{count / class_sizes[true]:.0%}</td>"
                         f"<td class='l'>{''.join(thumbs)}</td><td class='l'>{reference}</td></tr>")
        parts.append("</table>")

    parts.append("<h2>TFMA confusion matrix (image only, overall)</h2>")
    if confusion is None:
        parts.append("<p id='tfma'>not computed</p>")
    else:
        parts.append(f"<p id='tfma'>{CONFUSION_METRIC}: {confusion['examples']} examples, "
                     f"{confusion['classes']} classes, argmax accuracy "
                     f"<b>{_pct(confusion['accuracy'])}</b> (the table's image-only top-1: "
                     f"{_pct(report['results'][IMAGE_ONLY]['overall']['top1'])}).</p>")
        if confusion["top_confusions"]:
            parts.append("<table id='tfma_cells'><tr><th class='l'>actual</th>"
                         "<th class='l'>predicted</th><th>examples</th></tr>")
            for a, p, n in confusion["top_confusions"]:
                parts.append(f"<tr><td class='l'>{esc(a)}</td><td class='l'>{esc(p)}</td>"
                             f"<td>{n}</td></tr>")
            parts.append("</table>")
    # What the browser shows: how many of the page's images loaded (read by the test)
    parts.append("<p id='status'>images: not checked (scripts off)</p><script>"
                 "window.addEventListener('load',function(){var im=document.images,ok=0;"
                 "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}"
                 "document.getElementById('status').textContent='images shown: '+ok+' of '"
                 "+im.length;});</script>")
    parts.append("</body></html>")
    path = os.path.join(out_dir, REPORT_HTML)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({"confused_pairs": [(t, p, c) for t, p, c, _ in pairs],
                   "tfma_confusion": confusion}, f, indent=2)
    return path
