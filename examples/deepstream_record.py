#!/usr/bin/env python3
"""Record a DeepStream pipeline's tensor output with dsprobe (run on a Jetson or dGPU with DeepStream + pyds).

    python3 examples/deepstream_record.py --pgie config_infer_primary.txt \
        file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_1080p_h264.mp4 rtsp://camera/stream \
        -o recordings/run1.h5 --every-n 2 --image-size 640 --duration 60

Pipeline (like deepstream-test3): uridecodebin x N -> nvstreammux -> nvinfer (PGIE, output-tensor-meta=1)
-> [nvinfer SGIE] -> nvvideoconvert -> RGBA caps -> [probe here] -> fakesink | nvdsosd -> sink.
Check the result with ``dsprobe inspect recordings/run1.h5``. See docs/jetson.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import dsprobe
import dsprobe.deepstream
from dsprobe.deepstream.surface import is_jetson


def is_wsl() -> bool:
    """WSL2: CPU access to CUDA unified memory segfaults there, NVIDIA's samples use pinned memory."""
    try:
        return "microsoft" in Path("/proc/version").read_text().lower()
    except OSError:
        return False


def platform_choices(pyds, jetson: bool, wsl: bool) -> dict:
    """What NVIDIA's deepstream-imagedata-multistream sample chooses per platform: the
    nvbuf-memory-type that lets the CPU read frames (None on Jetson: surface arrays are mapped by
    pyds) and the display sink (nv3dsink on Jetson, nveglglessink on dGPU)."""
    if jetson:
        memory = None
    elif wsl:
        memory = int(getattr(pyds, "NVBUF_MEM_CUDA_PINNED", 1))
    else:
        memory = int(getattr(pyds, "NVBUF_MEM_CUDA_UNIFIED", 3))
    return {"memory_type": memory, "sink": "nv3dsink" if jetson else "nveglglessink"}


def link_if_nvmm(pad, target, name: str) -> bool:
    """uridecodebin's pad-added: link only NVMM video pads (nvstreammux takes NVIDIA memory)."""
    caps = pad.get_current_caps() or pad.query_caps(None)
    if not caps.get_structure(0).get_name().startswith("video") or target.is_linked():
        return False
    features = caps.get_features(0)
    if features is None or not features.contains("memory:NVMM"):
        print(
            f"{name}: the decoder gave no NVMM (NVIDIA memory) video pad; is the NVIDIA decoder "
            "(nvv4l2decoder) installed and chosen?",
            file=sys.stderr,
        )
        return False
    return pad.link(target) == 0  # Gst.PadLinkReturn.OK


def check_configs(paths: list[str], live: bool = False) -> bool:
    """Print what ``dsprobe doctor`` finds in the GIE configs; False when one is an error."""
    from dsprobe.cli.doctor import diagnose

    found = diagnose([p for p in paths if p], live=live, platform=False)
    for f in found:
        print(f, file=sys.stderr)
    return not any(f.level == "error" for f in found)


def build_pipeline(Gst, args):
    pipeline = Gst.Pipeline.new("dsprobe-record")
    mux = Gst.ElementFactory.make("nvstreammux", "mux")
    mux.set_property("width", args.muxer[0])
    mux.set_property("height", args.muxer[1])
    mux.set_property("batch-size", len(args.uris))
    mux.set_property("batched-push-timeout", 40000)
    if any(u.startswith("rtsp://") for u in args.uris):
        mux.set_property("live-source", 1)
    pipeline.add(mux)
    for i, uri in enumerate(args.uris):
        src = Gst.ElementFactory.make("uridecodebin", f"src{i}")
        src.set_property("uri", uri)
        sinkpad = (
            mux.request_pad_simple(f"sink_{i}")
            if hasattr(mux, "request_pad_simple")
            else mux.get_request_pad(f"sink_{i}")
        )

        def on_pad(_src, pad, target=sinkpad, name=uri):
            link_if_nvmm(pad, target, name)

        src.connect("pad-added", on_pad)
        pipeline.add(src)
    chain = [mux]
    pgie = Gst.ElementFactory.make("nvinfer", "pgie")
    pgie.set_property("config-file-path", args.pgie)
    pgie.set_property("output-tensor-meta", True)  # the tensors dsprobe records
    chain.append(pgie)
    if args.sgie:
        sgie = Gst.ElementFactory.make("nvinfer", "sgie")
        sgie.set_property("config-file-path", args.sgie)
        sgie.set_property("output-tensor-meta", True)
        chain.append(sgie)
    conv = Gst.ElementFactory.make("nvvideoconvert", "conv")
    caps = Gst.ElementFactory.make("capsfilter", "rgba")
    caps.set_property("caps", Gst.Caps.from_string("video/x-raw(memory:NVMM), format=RGBA"))
    import pyds

    choice = platform_choices(pyds, is_jetson(), is_wsl())
    if choice["memory_type"] is not None:  # CPU access to frames on dGPU (pinned on WSL)
        for el in (mux, conv):
            el.set_property("nvbuf-memory-type", choice["memory_type"])
    chain += [conv, caps]
    if args.display:
        chain += [
            Gst.ElementFactory.make("nvdsosd", "osd"),
            Gst.ElementFactory.make(choice["sink"], "sink"),
        ]
    else:
        sink = Gst.ElementFactory.make("fakesink", "sink")
        sink.set_property("sync", False)
        chain.append(sink)
    for el in chain[1:]:
        pipeline.add(el)
    for a, b in zip(chain, chain[1:]):
        if not a.link(b):
            raise RuntimeError(f"cannot link {a.get_name()} -> {b.get_name()}")
    return pipeline, caps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("uris", nargs="+", help="file:// or rtsp:// URIs, one per stream")
    ap.add_argument("--pgie", required=True, help="nvinfer config of the primary GIE")
    ap.add_argument(
        "--sgie", help="nvinfer config of a secondary GIE (its tensors are recorded per object)"
    )
    ap.add_argument(
        "-o", "--output", default="recordings/run.h5", help="the .h5 recording to write"
    )
    ap.add_argument(
        "--muxer",
        type=lambda s: tuple(int(v) for v in s.split("x")),
        default=(1920, 1080),
        help="nvstreammux output WIDTHxHEIGHT (the space of object rects), default 1920x1080",
    )
    ap.add_argument("--every-n", type=int, default=1, help="record every Nth frame per stream")
    ap.add_argument("--max-fps", type=float, help="at most this many frames per second per stream")
    ap.add_argument(
        "--image-size", type=int, default=640, help="longest side of stored frames (0: no images)"
    )
    ap.add_argument(
        "--crops", action="store_true", help="also store a crop of each object an SGIE inferred on"
    )
    ap.add_argument(
        "--unique-ids",
        type=lambda s: [int(v) for v in s.split(",")],
        help="record only these gie-unique-ids, e.g. 1,2 (default: every GIE)",
    )
    ap.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: end of stream)"
    )
    ap.add_argument("--display", action="store_true", help="show the OSD instead of a fakesink")
    args = ap.parse_args()

    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import GLib, Gst

    if not check_configs([args.pgie, args.sgie]):
        print("fix the errors above first (dsprobe doctor explains each)", file=sys.stderr)
        return 2
    Gst.init(None)
    pipeline, probe_after = build_pipeline(Gst, args)
    configs = {dsprobe.load_nvinfer_config(args.pgie).gie_unique_id: args.pgie}
    if args.sgie:
        configs[dsprobe.load_nvinfer_config(args.sgie).gie_unique_id] = args.sgie
    recorder = dsprobe.Recorder(
        args.output,
        nvinfer_config=configs,
        every_n=args.every_n,
        max_fps=args.max_fps,
        images=args.image_size > 0,
        image_max_size=args.image_size or 640,
        notes={"uris": args.uris, "app": "examples/deepstream_record.py"},
    )
    # probe after the RGBA converter: tensors from every GIE upstream, plus frame pixels
    handle = dsprobe.deepstream.attach_recorder(
        probe_after.get_static_pad("src"),
        recorder,
        muxer_size=args.muxer,
        object_crops=args.crops,
        unique_ids=args.unique_ids,
    )
    loop = GLib.MainLoop()
    bus = pipeline.get_bus()
    bus.add_signal_watch()

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.EOS:
            loop.quit()
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"pipeline error: {err}: {dbg}", file=sys.stderr)
            loop.quit()

    bus.connect("message", on_message)
    if args.duration:
        GLib.timeout_add(
            int(args.duration * 1000), lambda: (pipeline.send_event(Gst.Event.new_eos()), False)[1]
        )
    signal.signal(signal.SIGINT, lambda *a: pipeline.send_event(Gst.Event.new_eos()))

    def report():
        s = handle.stats
        print(
            f"frames {s['frames']} recorded {s['frames_recorded']} probe {s['probe_ms_mean']:.2f} ms "
            f"(p99 {s['probe_ms_p99']:.2f}) errors {s['error_count']} | recorder {recorder.stats['written']} written, "
            f"{recorder.stats['dropped_queue_full']} dropped",
            flush=True,
        )
        return True

    GLib.timeout_add_seconds(5, report)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
        handle.detach()  # also stores the final probe stats in the recording
        recorder.close()
        report()
    print(f"recording: {args.output}  (dsprobe inspect {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
