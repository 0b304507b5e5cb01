"""The demo's secondary section: PGIE + SGIE recorded with the reference recorder (object crops
included), the SGIE's classifier and embedding scored against the sample's ground truth, and live ==
replay for the SGIE outputs.

* classifier: nvinfer's rule on the ``color`` layer over a ``classifier-threshold`` sweep; accuracy at
  the config's threshold and at the best one (highest F1 of precision and accuracy);
* embedding: health (NaN, norms, collapse), cosine similarity of same-identity pairs (other frames)
  vs different-identity pairs, AUC, re-identification top-1 across frames;
* live == replay: a second reference run of the same streams (their first ``LIVE_FRAMES`` frames) applies the classifier and embedding
  postprocesses per object, as the live probe does (``pp(frame)``), and must give exactly what the
  batched replay of the first recording gives (class, score, vector, rect).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: frames per stream of the live run (the first 5 s at 15 fps), to keep the demo fast
LIVE_FRAMES = 75


def record_secondary(
    videos: list[Path], path: Path, batch: int, crops: bool, max_frames: int | None = None
) -> Any:
    """PGIE + the sample SGIE through the reference recorder (the PGIE config's postprocess makes the
    objects the SGIE runs on); ``crops``: store each object's crop; ``max_frames`` per stream."""
    from dsprobe.reference.recorder import record_onnx
    from dsprobe.sample import CONFIG_PATH, MUXER_SIZE, SECONDARY_CONFIG_PATH

    return record_onnx(
        videos,
        CONFIG_PATH,
        None,
        path,
        muxer=MUXER_SIZE,
        batch=batch,
        images=False,
        object_images=crops,
        secondary=[SECONDARY_CONFIG_PATH],
        max_frames=max_frames,
        progress=False,
    )


def score_secondary(rec: Any, gt: Any) -> dict[str, Any]:
    """Classifier and embedding figures of the sample SGIE in ``rec`` against ground truth ``gt``."""
    from dsprobe.analysis import secondary as sec
    from dsprobe.nvinfer.config import load_nvinfer_config
    from dsprobe.sample import SECONDARY_CONFIG_PATH, SECONDARY_LABELS

    cfg = load_nvinfer_config(SECONDARY_CONFIG_PATH)
    out = sec.sgie_outputs(rec, cfg.gie_unique_id)
    m = sec.match_ground_truth(out.objects, gt, "color", SECONDARY_LABELS)
    probs, emb = out.layers["color"], out.layers["embedding"]
    truth = m["gt_attribute"].to_numpy()
    sweep = sec.threshold_sweep(probs, truth)
    best = sec.best_threshold(sweep)
    frame = (m["source_id"] * 1_000_000 + m["frame_num"]).to_numpy()
    ident, group = m["gt_identity"].to_numpy(), m["source_id"].to_numpy()
    same, diff = sec.pair_similarities(emb, ident, frame, group, max_rows=2000)
    pred, _ = sec.classifier_predictions(probs, best)
    return {
        "objects": len(m),
        "matched": int((m["gt_index"] >= 0).sum()),
        "config_threshold": cfg.classifier_threshold,
        "at_config": sec.classifier_scores(probs, truth, cfg.classifier_threshold),
        "best_threshold": best,
        "at_best": sec.classifier_scores(probs, truth, best),
        "confusion": sec.attribute_confusion(truth, pred, SECONDARY_LABELS),
        "sweep": sweep,
        "health": sec.embedding_health(emb),
        "separation": sec.separation(same, diff),
        "pairs": (len(same), len(diff)),
        "reid": sec.reid_top1(emb, ident, frame, group),
        "same": same,
        "different": diff,
    }


def live_equals_replay(replay_rec: Any, live_path: Path, threshold: float) -> tuple[int, int]:
    """Frames of the SGIE whose live outputs (classifier + embedding postprocess per object on the
    second run, ``pp(frame)``) equal the batched replay of the first recording; (equal, frames)."""
    from dsprobe import classifier_postprocess, embedding_postprocess, open_recording
    from dsprobe.sample import SECONDARY_CONFIG_PATH

    cls = classifier_postprocess(SECONDARY_CONFIG_PATH, ["color"], threshold)
    emb = embedding_postprocess(SECONDARY_CONFIG_PATH, "embedding")
    f = replay_rec.frames
    rows = np.flatnonzero(f["layer_row"].to_numpy() < 0)  # SGIE frames: tensors per object
    keys = {
        (int(s), int(n)): int(r)
        for r, s, n in zip(rows, f["source_id"].to_numpy()[rows], f["frame_num"].to_numpy()[rows])
    }
    equal = 0
    with open_recording(live_path) as live:
        views = [live[int(r)] for r in np.flatnonzero(live.frames["layer_row"].to_numpy() < 0)]
        pairs = [(v, keys.get((v.source_id, v.frame_num))) for v in views]
        # replay (batched) only the frames the live run covered
        covered = np.array(sorted(r for _, r in pairs if r is not None), np.int64)
        replay_c = cls.detections_by_row(replay_rec, covered)
        replay_e = emb.detections_by_row(replay_rec, covered)
        for v, row in pairs:
            if row is None:
                continue
            a, b, va, vb = cls(v), replay_c[row], emb(v), replay_e[row]
            if (
                a.same_objects(b)
                and np.array_equal(a.vectors, b.vectors)
                and va.same_objects(vb)
                and np.array_equal(va.vectors, vb.vectors)
            ):
                equal += 1
    return equal, len(pairs)


def report_lines(s: dict[str, Any], figures: list[str]) -> list[str]:
    """The report's "Secondary model" section."""
    c, b, h, sep, reid = s["at_config"], s["at_best"], s["health"], s["separation"], s["reid"]
    conf = s["confusion"]
    lines = [
        "## Secondary model (SGIE: colour classifier + 128-d embedding on the detector's objects)",
        "",
        f"{s['objects']} objects inferred, {s['matched']} matched to a ground-truth box (IoU >= 0.5).",
        "",
        "| classifier-threshold | accuracy | coverage | precision | F1 |",
        "| --- | --- | --- | --- | --- |",
        f"| {s['config_threshold']:g} (config) | {c['accuracy']:.4f} | {c['coverage']:.4f} | "
        f"{c['precision']:.4f} | {c['f1']:.4f} |",
        f"| **{s['best_threshold']:g}** (best F1) | {b['accuracy']:.4f} | {b['coverage']:.4f} | "
        f"{b['precision']:.4f} | {b['f1']:.4f} |",
        "",
        "Confusion at the best threshold (rows: ground truth, columns: attached label):",
        "",
        "| | " + " | ".join(conf.columns) + " |",
        "|" + " --- |" * (len(conf.columns) + 1),
    ]
    lines += [f"| {k} | " + " | ".join(str(v) for v in row) + " |" for k, row in conf.iterrows()]
    lines += [
        "",
        f"Embedding: {h['rows']} vectors of {h['dim']} floats, {h['nan_rows']} with NaN, "
        f"{h['inf_rows']} with inf, {h['zero_rows']} zero; L2 norm {h['norm_min']:.6f} .. "
        f"{h['norm_max']:.6f}; mean pairwise cosine {h['mean_cosine']:.3f}.",
        f"Cosine similarity: same identity on other frames median {sep['same_median']:.3f} "
        f"({s['pairs'][0]} pairs), different identities median {sep['different_median']:.3f} "
        f"({s['pairs'][1]} pairs); AUC {sep['auc']:.4f}; best verification threshold "
        f"{sep['threshold']:.3f} ({sep['verification_accuracy']:.4f} balanced accuracy).",
        f"Re-identification across frames (nearest neighbour in the same stream, other frames): "
        f"top-1 {reid['top1']:.4f} over {reid['queries']} objects.",
        "",
        f"Live == replay for the SGIE outputs (classifier at {s['best_threshold']:g} + embedding, "
        f"per object as the live probe runs them, on a second run of the first {LIVE_FRAMES} frames "
        f"of each stream): identical on {s['live_equal'][0]} of {s['live_equal'][1]} frames.",
        "",
    ]
    lines += [f"![{f}]({f})" for f in figures]
    return lines


def figures(s: dict[str, Any], out: Path) -> list[str]:
    """PNG figures of the section (threshold sweep, cosine histograms); [] without matplotlib."""
    try:
        from dsprobe.notebook.figures import pyplot
        from dsprobe.notebook.secondary import plot_cosine_histograms, plot_threshold_sweep
    except ImportError:
        return []
    plt = pyplot()
    names = []
    for name, fig in (
        ("secondary_threshold.png", plot_threshold_sweep(s["sweep"], s["best_threshold"])),
        ("secondary_cosine.png", plot_cosine_histograms(s["same"], s["different"])),
    ):
        fig.savefig(out / name, dpi=80, bbox_inches="tight")
        plt.close(fig)
        names.append(name)
    return names


def summary(s: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready figures for summary.json."""
    return {
        "objects": s["objects"],
        "matched": s["matched"],
        "accuracy_at_config": s["at_config"]["accuracy"],
        "best_threshold": s["best_threshold"],
        "accuracy_at_best": s["at_best"]["accuracy"],
        "f1_at_best": s["at_best"]["f1"],
        "nan_rows": s["health"]["nan_rows"],
        "same_median": s["separation"]["same_median"],
        "different_median": s["separation"]["different_median"],
        "auc": s["separation"]["auc"],
        "reid_top1": s["reid"]["top1"],
        "live_equal_frames": s["live_equal"][0],
        "live_frames": s["live_equal"][1],
    }
