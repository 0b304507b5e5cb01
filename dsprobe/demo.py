"""``make demo``: the whole dsprobe loop on the bundled sample, offline, in a few minutes on 2 cores.

record (reference recorder) -> replay (default postprocess from the nvinfer config) -> score vs ground
truth -> tune (automatic search) -> export (spec + nvinfer keys) -> live run with the exported spec
-> check live == replay frame by frame -> report (out/demo/report.md + PNG overlays).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable


SAMPLE_RECORDING = Path(__file__).resolve().parents[1] / "recordings" / "sample.h5"


def _step(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        fn.step_name = name  # type: ignore[attr-defined]
        return fn
    return deco


class Demo:
    """The demo as a list of steps sharing ``self.state``; each prints what it did."""

    def __init__(self, out: Path, seconds: float, search_grid: dict[str, list] | None = None) -> None:
        self.out = out
        self.seconds = seconds
        self.grid = search_grid or {"pre_cluster_threshold": [0.05, 0.1, 0.2, 0.3, 0.45, 0.6],
                                    "iou_threshold": [0.3, 0.45, 0.6, 0.75]}
        self.state: dict[str, Any] = {}
        self.report: list[str] = ["# dsprobe demo report", ""]

    def log(self, msg: str) -> None:
        print(f"[demo] {msg}", flush=True)
        self.report.append(f"- {msg}")

    @_step("videos")
    def videos(self) -> None:
        from dsprobe.sample import make_videos
        v = make_videos(self.out / "videos", seconds=self.seconds)
        self.state["videos"], self.state["gt_json"] = v.paths, v.gt_json
        self.log(f"generated {len(v.paths)} sample streams of {self.seconds:g} s with COCO ground truth: {v.gt_json}")

    @_step("record")
    def record(self) -> None:
        from dsprobe.reference.recorder import record_onnx
        from dsprobe.sample import CONFIG_PATH, MUXER_SIZE
        path = self.out / "sample.h5"
        s = record_onnx(self.state["videos"], CONFIG_PATH, None, path, muxer=MUXER_SIZE, batch=2, progress=False)
        self.state["recording"] = path
        self.log(f"recorded {s.frames} frames through the sample model ({s.fps:.1f} frames/s) -> {path}")

    @_step("replay")
    def replay(self) -> None:
        from dsprobe import Postprocess, open_recording
        from dsprobe.evaluate import evaluate, load_ground_truth
        rec = open_recording(self.state["recording"])
        self.state["rec"] = rec
        pp = Postprocess.from_nvinfer_config(rec.config())
        t0 = time.perf_counter()
        df = pp.run_recording(rec)
        dt = time.perf_counter() - t0
        gt = load_ground_truth(self.state["gt_json"], frame_size=tuple(rec.frames[["frame_width", "frame_height"]].iloc[0]))
        frames = list(zip(rec.frames["source_id"].astype(int), rec.frames["frame_num"].astype(int)))
        res = evaluate(df, gt, frames)
        self.state.update(pp=pp, gt=gt, frames=frames, before=res, before_df=df)
        counts = df.groupby("source_id").size().to_dict()
        self.log(f"replayed {len(rec)} frames with the config's postprocess ({pp}) at {len(rec) / dt:.0f} frames/s; "
                 f"detections per stream {counts}")
        self.log(f"before tuning: {res.summary()}")

    @_step("tune")
    def tune(self) -> None:
        from dsprobe.evaluate import evaluate
        from dsprobe.search import search
        rec, pp = self.state["rec"], self.state["pp"]
        t0 = time.perf_counter()
        dec = pp.decode_recording(rec)
        result = search(dec, self.state["gt"], self.grid, frames=self.state["frames"])
        dt = time.perf_counter() - t0
        tuned = result.best
        after = evaluate(tuned.run_recording(rec), self.state["gt"], self.state["frames"])
        self.state.update(tuned=tuned, after=after, search=result)
        n = len(result.table)
        self.log(f"searched {n} settings in {dt:.1f} s; best {result.best_params}")
        self.log(f"after tuning: {after.summary()}")
        try:
            from dsprobe.viz import plot_heatmap
            fig = plot_heatmap(result.pivot(), title="mAP@0.5 by pre-cluster threshold x NMS IoU")
            fig.savefig(self.out / "search_heatmap.png", dpi=90, bbox_inches="tight")
        except ImportError:
            pass

    @_step("export")
    def export(self) -> None:
        from dsprobe.export import to_nvinfer
        spec = self.state["tuned"].save(self.out / "tuned.json")
        keys = self.out / "tuned_nvinfer.txt"
        keys.write_text(to_nvinfer(self.state["tuned"]).text())
        self.state["spec"] = spec
        self.log(f"exported the tuned postprocess: {spec} (nvinfer keys: {keys})")

    @_step("live")
    def live(self) -> None:
        from dsprobe import Postprocess, open_recording
        from dsprobe.reference.recorder import record_onnx
        from dsprobe.sample import CONFIG_PATH, MUXER_SIZE
        spec = Postprocess.load(self.state["spec"])
        live_path = self.out / "live.h5"
        record_onnx(self.state["videos"], CONFIG_PATH, None, live_path, muxer=MUXER_SIZE, batch=2,
                    postprocess=spec, images=False, progress=False)
        live = open_recording(live_path)
        replay = open_recording(self.state["recording"])
        equal = 0
        for i in range(len(live)):
            a = live[i]
            b = replay.find(a.source_id, a.frame_num, a.unique_id)
            if a.detections.same_objects(spec(b)):
                equal += 1
        self.state["live_equal"] = (equal, len(live))
        self.log(f"live run with the exported spec (reference recorder) -> {live_path}: "
                 f"live == replay on {equal}/{len(live)} frames")
        live.close()
        replay.close()

    @_step("report")
    def report_step(self) -> None:
        from dsprobe.viz import plot_frame
        rec, tuned, gt = self.state["rec"], self.state["tuned"], self.state["gt"]
        labels = tuned.labels
        shots = []
        for src in sorted(set(rec.frames["source_id"])):
            rows = rec.frames.index[rec.frames["source_id"] == src]
            for r in (rows[len(rows) // 3], rows[2 * len(rows) // 3]):
                f = rec[int(r)]
                fig = plot_frame(f, tuned(f), labels, gt=gt.for_frame(f.source_id, f.frame_num))
                name = f"overlay_s{f.source_id}_f{f.frame_num}.png"
                fig.savefig(self.out / name, dpi=80, bbox_inches="tight")
                shots.append(name)
                import matplotlib.pyplot as plt
                plt.close(fig)
        self.report += ["", "## Overlays (tuned postprocess; dashed white = ground truth)", ""]
        self.report += [f"![{s}]({s})" for s in shots]
        self.report += ["", "![search](search_heatmap.png)"]
        (self.out / "report.md").write_text("\n".join(self.report) + "\n")
        summary = {"frames": len(rec), "map50_before": self.state["before"].map50,
                   "map50_after": self.state["after"].map50, "map50_95_before": self.state["before"].map50_95,
                   "map50_95_after": self.state["after"].map50_95, "best_params": self.state["search"].best_params,
                   "live_equal_frames": self.state["live_equal"][0], "live_frames": self.state["live_equal"][1]}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"[demo] report: {self.out / 'report.md'}")

    def steps(self) -> list[Callable]:
        return [self.videos, self.record, self.replay, self.tune, self.export, self.live, self.report_step]

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for step in self.steps():
            step()
        self.state["rec"].close()
        print(f"[demo] done in {time.perf_counter() - t0:.0f} s; everything is in {self.out}/")
        return self.state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each sample stream")
    ap.add_argument("--no-sample-copy", action="store_true",
                    help="do not copy the recording to recordings/sample.h5 (used by the notebooks)")
    args = ap.parse_args(argv)
    demo = Demo(Path(args.out), args.seconds)
    demo.run()
    if not args.no_sample_copy:
        SAMPLE_RECORDING.parent.mkdir(exist_ok=True)
        shutil.copy(demo.state["recording"], SAMPLE_RECORDING)
        shutil.copy(demo.state["gt_json"], SAMPLE_RECORDING.with_name("sample_gt.json"))
        print(f"[demo] sample recording for the notebooks: {SAMPLE_RECORDING}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
