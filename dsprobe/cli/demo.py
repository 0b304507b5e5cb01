"""``make demo``: the whole dsprobe loop on the bundled sample, offline, in a few minutes on 2 cores.

videos (synthetic scenes + COCO ground truth) -> record (reference recorder, sample model) -> replay
(default postprocess from the nvinfer config) and score -> tune (parameter search) -> export (spec +
nvinfer keys) -> live run with the exported spec -> check live == replay frame by frame -> report
(``out/demo/report.md`` with PNG overlays, per-stream counts and mAP).

``python -m dsprobe.cli.demo --make-sample`` instead writes the small committed sample recording
``recordings/sample.h5`` (+ ``sample_gt.json``) that tests and notebooks use without recording first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SAMPLE_RECORDING = Path(__file__).resolve().parents[2] / "recordings" / "sample.h5"
DEFAULT_GRID = {
    "pre_cluster_threshold": [0.05, 0.1, 0.2, 0.25, 0.3, 0.45, 0.6],  # 0.25, 0.45: the config's
    "iou_threshold": [0.2, 0.3, 0.45, 0.6, 0.75],
}


@dataclass
class Step:
    """One demo step: a name and a function of the Demo (which keeps what steps share in ``state``)."""

    name: str
    run: Callable[[], None]


class Demo:
    """The demo as a list of steps (:meth:`steps`) sharing ``self.state``; each logs what it did, and
    the log lines become the report's first section. Add a step by extending :meth:`steps`."""

    def __init__(
        self,
        out: str | Path,
        seconds: float = 20.0,
        search_grid: dict[str, list] | None = None,
        batch: int = 2,
    ) -> None:
        self.out = Path(out)
        self.seconds = seconds
        self.batch = batch
        self.grid = search_grid or DEFAULT_GRID
        self.state: dict[str, Any] = {}
        self.log_lines: list[str] = []
        self.timings: dict[str, float] = {}

    def log(self, msg: str) -> None:
        print(f"[demo] {msg}", flush=True)
        self.log_lines.append(msg)

    # ------------------------------------------------------------------ steps
    def videos(self) -> None:
        from dsprobe.sample import make_videos

        v = make_videos(self.out / "videos", seconds=self.seconds)
        self.state["videos"], self.state["gt_json"] = v.paths, v.gt_json
        self.log(
            f"generated {len(v.paths)} sample streams of {self.seconds:g} s (960x540, 15 fps, H.264) with "
            f"COCO ground truth: {v.gt_json}"
        )

    def record(self) -> None:
        from dsprobe import RecorderOptions
        from dsprobe.reference.recorder import record_onnx
        from dsprobe.sample import CONFIG_PATH, MUXER_SIZE

        path = self.out / "recording.h5"
        s = record_onnx(
            self.state["videos"],
            CONFIG_PATH,
            None,
            path,
            muxer=MUXER_SIZE,
            batch=self.batch,
            progress=False,
            recorder=RecorderOptions(overwrite=True),  # the demo's own output folder
        )
        self.state["recording"] = path
        self.log(
            f"recorded {s.frames} frames through the sample model with the reference recorder "
            f"({s.fps:.1f} frames/s) -> {path}"
        )

    def replay(self) -> None:
        from dsprobe import Postprocess, open_recording
        from dsprobe.analysis.evaluate import evaluate, load_ground_truth

        rec = open_recording(self.state["recording"])
        self.state["rec"] = rec
        pp = Postprocess.from_nvinfer_config(rec.config())
        t0 = time.perf_counter()
        df = pp.run_recording(rec)
        dt = time.perf_counter() - t0
        size = tuple(int(v) for v in rec.frames[["frame_width", "frame_height"]].iloc[0])
        gt = load_ground_truth(self.state["gt_json"], frame_size=size)
        frames = list(zip(rec.frames["source_id"].astype(int), rec.frames["frame_num"].astype(int)))
        res = evaluate(df, gt, frames)
        self.state.update(pp=pp, gt=gt, frames=frames, before=res, before_df=df)
        self.log(
            f"replayed {len(rec)} frames with the config's postprocess ({pp}) at {len(rec) / dt:.0f} frames/s"
        )
        self.log(f"before tuning: {res.summary()}")

    def tune(self) -> None:
        """Search the grid under every objective; the exported setting is the best by F1 at IoU 0.5
        (a deployable operating point). mAP's best is reported beside it: mAP rewards every extra
        low-score candidate, so its best setting sits at the grid's lowest threshold."""
        from dsprobe.analysis.evaluate import evaluate
        from dsprobe.analysis.objectives import precision_recall_f1
        from dsprobe.analysis.operating import search_objectives
        from dsprobe.analysis.search import search

        rec, pp, gt, frames = (self.state[k] for k in ("rec", "pp", "gt", "frames"))
        t0 = time.perf_counter()
        decoded = pp.decode_recording(rec)
        result = search(decoded, gt, self.grid, frames=frames)
        found = search_objectives(decoded, gt, self.grid, frames=frames)
        dt = time.perf_counter() - t0
        tuned = found.best("f1")
        df = tuned.run_recording(rec)
        after = evaluate(df, gt, frames)
        prf = {
            k: precision_recall_f1(found.scorer.matches(q))
            for k, q in (("before", pp), ("after", tuned))
        }
        self.state.update(
            tuned=tuned, after=after, after_df=df, search=result, found=found, prf=prf
        )
        self.log(
            f"searched {len(result.table)} settings under {len(found.objectives)} objectives in "
            f"{dt:.1f} s; exported: the best by F1 {found.best_params('f1')} (mAP@0.5's best: "
            f"{result.best_params}, {result.table['map50'].max():.3f})"
        )
        (p0, r0, f0), (p1, r1, f1) = prf["before"], prf["after"]
        self.log(
            f"after tuning: F1 {f0:.3f} -> {f1:.3f} (precision {p0:.3f} -> {p1:.3f}, recall "
            f"{r0:.3f} -> {r1:.3f}, IoU 0.5); {after.summary()}"
        )
        try:
            from dsprobe.notebook.plots import plot_heatmap

            fig = plot_heatmap(
                result.pivot(),
                title="mAP@0.5 by pre-cluster threshold x NMS IoU (the export is picked by F1)",
            )
            fig.savefig(self.out / "search_heatmap.png", dpi=90, bbox_inches="tight")
            self.state["heatmap"] = "search_heatmap.png"
        except ImportError:
            pass

    def export(self) -> None:
        from dsprobe.analysis.export import to_nvinfer

        spec = self.state["tuned"].save(self.out / "tuned.json")
        keys = self.out / "tuned_nvinfer.txt"
        keys.write_text(to_nvinfer(self.state["tuned"]).text())
        self.state["spec"] = spec
        self.log(f"exported the tuned postprocess: {spec} (nvinfer [class-attrs-*] keys: {keys})")

    def live(self) -> None:
        from dsprobe import Postprocess, RecorderOptions, open_recording
        from dsprobe.reference.recorder import record_onnx
        from dsprobe.sample import CONFIG_PATH, MUXER_SIZE

        spec = Postprocess.load(self.state["spec"])
        live_path = self.out / "live.h5"
        record_onnx(
            self.state["videos"],
            CONFIG_PATH,
            None,
            live_path,
            muxer=MUXER_SIZE,
            batch=self.batch,
            postprocess=spec,
            images=False,
            progress=False,
            recorder=RecorderOptions(overwrite=True),
        )
        replay = self.state["rec"]
        equal = 0
        with open_recording(live_path) as live:
            for i in range(len(live)):
                a = live[i]
                if a.detections.same_objects(
                    spec(replay.find(a.source_id, a.frame_num, a.unique_id))
                ):
                    equal += 1
            n = len(live)
        self.state["live_equal"] = (equal, n)
        self.log(
            f"live run with the exported spec (reference recorder, the spec applied as the probe would) -> "
            f"{live_path}: live == replay on {equal}/{n} frames"
        )

    def secondary(self) -> None:
        """PGIE + the sample SGIE (colour classifier + embedding), scored; see ``demo_secondary``."""
        from dsprobe import open_recording
        from dsprobe.cli import demo_secondary as ds

        path, live = self.out / "secondary.h5", self.out / "secondary_live.h5"
        s = ds.record_secondary(self.state["videos"], path, self.batch, crops=True)
        self.log(
            f"recorded PGIE + SGIE (sample colour classifier + 128-d embedding, object crops) with the "
            f"reference recorder: {s.objects} SGIE objects ({s.fps:.1f} frames/s) -> {path}"
        )
        with open_recording(path) as rec:
            res = ds.score_secondary(rec, self.state["gt"])
            ds.record_secondary(self.state["videos"], live, self.batch, False, ds.LIVE_FRAMES)
            res["live_equal"] = ds.live_equals_replay(rec, live, res["best_threshold"])
        res["figures"] = ds.figures(res, self.out)
        self.state["secondary"] = res
        self.log(
            f"SGIE: colour accuracy {res['at_best']['accuracy']:.4f} at the best classifier-threshold "
            f"{res['best_threshold']:g}; re-identification top-1 {res['reid']['top1']:.4f}; live == "
            f"replay on {res['live_equal'][0]}/{res['live_equal'][1]} SGIE frames"
        )

    def report(self) -> None:
        path = self.out / "report.md"
        path.write_text(self._report_markdown())
        summary = {
            "frames": len(self.state["rec"]),
            "map50_before": self.state["before"].map50,
            "map50_after": self.state["after"].map50,
            "map50_95_before": self.state["before"].map50_95,
            "map50_95_after": self.state["after"].map50_95,
            "f1_before": self.state["prf"]["before"][2],
            "f1_after": self.state["prf"]["after"][2],
            "best_params": self.state["found"].best_params("f1"),
            "map50_best_params": self.state["search"].best_params,
            "live_equal_frames": self.state["live_equal"][0],
            "live_frames": self.state["live_equal"][1],
            "per_stream": self.state["per_stream"].to_dict(orient="records"),
            "step_seconds": {k: round(v, 2) for k, v in self.timings.items()},
        }
        if "secondary" in self.state:
            from dsprobe.cli.demo_secondary import summary as secondary_summary

            summary["secondary"] = secondary_summary(self.state["secondary"])
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        self.log(f"report: {path}")

    def steps(self) -> list[Step]:
        return [
            Step("videos", self.videos),
            Step("record", self.record),
            Step("replay", self.replay),
            Step("tune", self.tune),
            Step("export", self.export),
            Step("live", self.live),
            Step("secondary", self.secondary),
            Step("report", self.report),
        ]

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        t_all = time.perf_counter()
        try:
            for step in self.steps():
                t0 = time.perf_counter()
                step.run()
                self.timings[step.name] = time.perf_counter() - t0
        finally:
            if "rec" in self.state:
                self.state["rec"].close()
        print(
            f"[demo] done in {time.perf_counter() - t_all:.0f} s; everything is in {self.out}/",
            flush=True,
        )
        return self.state

    # ------------------------------------------------------------------ report pieces
    def _per_stream(self) -> Any:
        """Per stream: frames, ground-truth boxes, detections, and at IoU 0.5 hits / false positives / misses
        of the tuned postprocess."""
        import pandas as pd

        from dsprobe.analysis.errors import error_table

        df, gt, frames = self.state["after_df"], self.state["gt"], self.state["frames"]
        errors = error_table(df, gt, frames)
        fr = pd.DataFrame(frames, columns=["source_id", "frame_num"])
        keys = set(map(tuple, fr.to_numpy().tolist()))
        gtb = gt.boxes[[k in keys for k in zip(gt.boxes["source_id"], gt.boxes["frame_num"])]]
        rows = []
        for src in sorted(fr["source_id"].unique()):
            n_det = int((df["source_id"] == src).sum())
            fp = int(((errors["source_id"] == src) & (errors["kind"] == "false_positive")).sum())
            miss = int(((errors["source_id"] == src) & (errors["kind"] == "missed")).sum())
            rows.append(
                {
                    "source_id": int(src),
                    "frames": int((fr["source_id"] == src).sum()),
                    "gt_boxes": int((gtb["source_id"] == src).sum()),
                    "detections": n_det,
                    "hits": n_det - fp,
                    "false_positives": fp,
                    "misses": miss,
                }
            )
        return pd.DataFrame(rows)

    def _overlays(self) -> list[str]:
        from dsprobe.notebook.figures import pyplot
        from dsprobe.notebook.frames import plot_frame

        plt = pyplot()
        rec, tuned, gt = self.state["rec"], self.state["tuned"], self.state["gt"]
        shots = []
        for src in sorted(set(rec.frames["source_id"])):
            rows = rec.frames.index[rec.frames["source_id"] == src]
            for r in sorted({rows[len(rows) // 3], rows[2 * len(rows) // 3]}):
                f = rec[int(r)]
                fig = plot_frame(
                    f, tuned(f), tuned.labels, gt=gt.for_frame(f.source_id, f.frame_num)
                )
                name = f"overlay_s{f.source_id}_f{f.frame_num}.png"
                fig.savefig(self.out / name, dpi=80, bbox_inches="tight")
                plt.close(fig)
                shots.append(name)
        return shots

    def _evaluation(self) -> list[str]:
        """Errors by TIDE type and the best settings per objective (demo_evaluation.py)."""
        from dsprobe.cli.demo_evaluation import evaluation_section

        st = self.state
        return evaluation_section(
            st["rec"], st["tuned"], st["gt"], st["frames"], st["found"], self.out
        )

    def _report_markdown(self) -> str:
        before, after = self.state["before"], self.state["after"]
        per_stream = self._per_stream()
        self.state["per_stream"] = per_stream
        lines = ["# dsprobe demo report", "", "## What ran", ""] + [
            f"- {m}" for m in self.log_lines
        ]
        lines += [
            "",
            "## Scores (frame pixels; precision, recall and F1 at IoU 0.5; COCO mAP)",
            "",
            "| postprocess | precision | recall | F1 | mAP@0.5 | mAP@0.5:0.95 | detections | "
            + " | ".join(f"AP@0.5 {k}" for k in after.per_class_ap50)
            + " |",
            "| --- | --- | --- | --- | --- | --- | --- | "
            + " | ".join("---" for _ in after.per_class_ap50)
            + " |",
        ]
        prf = self.state["prf"]
        for name, key, r in (
            ("nvinfer config (before)", "before", before),
            ("tuned (after)", "after", after),
        ):
            lines.append(
                "| {} | {:.3f} | {:.3f} | {:.3f} | ".format(name, *prf[key])
                + f"{r.map50:.3f} | {r.map50_95:.3f} | {r.num_detections} | "
                + " | ".join(f"{v:.3f}" for v in r.per_class_ap50.values())
                + " |"
            )
        found = self.state["found"]
        own = {n: self.state["pp"].get_param(n) for n in found.params}
        by_map = self.state["search"].best_params
        lowest = min(self.grid.get("pre_cluster_threshold", [None]) or [None])
        why = (
            ": mAP rewards every extra low-score candidate, so its best sits at the grid's lowest "
            "threshold, with the false positives that brings"
            if lowest is not None and by_map.get("pre_cluster_threshold") == lowest
            else ""
        )
        lines += [
            "",
            f"The config's own setting (before): `{own}`. Exported setting (best F1 at IoU 0.5): "
            f"`{found.best_params('f1')}`. mAP@0.5 alone would pick `{by_map}`{why} (the "
            "objectives table below sets them side by side).",
            "",
            "## Per stream (tuned postprocess, IoU 0.5)",
            "",
            "| " + " | ".join(per_stream.columns) + " |",
            "|" + " --- |" * len(per_stream.columns),
        ]
        lines += [
            "| " + " | ".join(str(v) for v in row) + " |"
            for row in per_stream.itertuples(index=False)
        ]
        lines += self._evaluation()
        eq, n = self.state["live_equal"]
        lines += [
            "",
            f"Live run with the exported spec: identical detections on {eq} of {n} frames.",
            "",
        ]
        try:
            shots = self._overlays()
            lines += ["## Overlays (tuned postprocess; dashed white = ground truth)", ""]
            lines += [f"![{s}]({s})" for s in shots]
            if "heatmap" in self.state:
                lines += ["", "## Parameter search", "", f"![search]({self.state['heatmap']})"]
        except ImportError:
            lines += ["(matplotlib missing: no overlays; pip install 'dsprobe[notebook]')"]
        if "secondary" in self.state:
            from dsprobe.cli.demo_secondary import report_lines

            lines += [
                "",
                *report_lines(self.state["secondary"], self.state["secondary"]["figures"]),
            ]
        return "\n".join(lines) + "\n"


def make_sample(path: str | Path = SAMPLE_RECORDING, seconds: float = 1.6) -> Path:
    """The small sample recording (both sample streams, ``seconds`` each, JPEG images downscaled to
    640x360 at quality 60, gzip-9 tensors, the config's postprocess as the pipeline's objects) and its
    ground truth ``<stem>_gt.json`` beside it."""
    from dsprobe import Postprocess, RecorderOptions
    from dsprobe.nvinfer.config import load_nvinfer_config
    from dsprobe.reference.recorder import record_onnx
    from dsprobe.sample import CONFIG_PATH, MUXER_SIZE, make_videos

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        v = make_videos(tmp, seconds=seconds)
        tmp_out = Path(tmp) / path.name
        record_onnx(
            v.paths,
            CONFIG_PATH,
            None,
            tmp_out,
            muxer=MUXER_SIZE,
            batch=2,
            progress=False,
            recorder=RecorderOptions(image_quality=60, compression="gzip-9"),
            postprocess=Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH)),
            notes={
                "recorded_by": "python -m dsprobe.cli.demo --make-sample",
                "seconds_per_stream": seconds,
                "videos": "dsprobe.sample.make_videos (seeds 1, 2)",
                "muxer": list(MUXER_SIZE),
            },
        )
        shutil.move(str(tmp_out), path)
        shutil.copy(v.gt_json, path.with_name(f"{path.stem}_gt.json"))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    ap.add_argument(
        "--seconds", type=float, default=20.0, help="length of each sample stream (default 20)"
    )
    ap.add_argument(
        "--make-sample",
        action="store_true",
        help=f"only write the committed sample recording ({SAMPLE_RECORDING}) and its ground truth",
    )
    ap.add_argument(
        "--sample-seconds",
        type=float,
        default=1.6,
        help="seconds per stream for --make-sample (default 1.6: 24 frames each, under 5 MB)",
    )
    args = ap.parse_args(argv)
    if args.make_sample:
        p = make_sample(SAMPLE_RECORDING, args.sample_seconds)
        print(
            f"[demo] sample recording: {p} ({p.stat().st_size / 1e6:.1f} MB), ground truth "
            f"{p.with_name(p.stem + '_gt.json')}"
        )
        return 0
    Demo(Path(args.out), args.seconds).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
