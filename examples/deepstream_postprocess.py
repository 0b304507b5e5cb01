#!/usr/bin/env python3
"""Run a postprocess tuned in the notebooks live in DeepStream (on the device, with pyds).

    python3 examples/deepstream_postprocess.py --pgie config_infer_primary.txt --spec tuned.json \
        --sgie config_infer_secondary.txt file:///path/video.mp4

A bundle exported with your own decoder (``pp.export("tuned/")``, notebook 05) runs only with
``--spec tuned/ --trust-bundle``: read ``tuned/user_steps.py`` first; an edited module is refused.

PGIE with network-type=100 (no nvinfer parser) and output-tensor-meta=1 -> dsprobe's live postprocess
adds NvDsObjectMeta (unique_component_id = the PGIE's gie-unique-id, so the SGIE's operate-on-gie-id
picks them up; OSD text with font and background; frame_meta.bInferDone set, as nvinfer and NVIDIA's
ssd-parser sample do, so nvtracker treats the frames as detected) -> nvtracker (optional) -> SGIE ->
nvdsosd -> sink. Optionally records everything too. The configs are checked first (dsprobe doctor).
"""

from __future__ import annotations

import argparse
import sys

import dsprobe
import dsprobe.deepstream


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("uris", nargs="+")
    ap.add_argument(
        "--pgie", required=True, help="PGIE config: network-type=100, output-tensor-meta=1"
    )
    ap.add_argument(
        "--spec",
        required=True,
        help="postprocess spec saved by Postprocess.save / notebook 04, or a bundle folder "
        "exported by Postprocess.export / notebook 05",
    )
    ap.add_argument(
        "--trust-bundle",
        action="store_true",
        help="run the user code of a bundle (--spec folder/): your consent, after reading it",
    )
    ap.add_argument(
        "--sgie",
        help="SGIE config consuming the objects (operate-on-gie-id = PGIE's gie-unique-id)",
    )
    ap.add_argument("--tracker", help="nvtracker ll-config-file (enables the tracker)")
    ap.add_argument(
        "--muxer", type=lambda s: tuple(int(v) for v in s.split("x")), default=(1920, 1080)
    )
    ap.add_argument("--record", help="also record tensors + the added objects to this .h5")
    ap.add_argument("--display", action="store_true")
    args = ap.parse_args()

    import gi

    gi.require_version("Gst", "1.0")
    from deepstream_record import build_pipeline, check_configs  # same source/muxer/convert chain
    from gi.repository import GLib, Gst

    if not check_configs([args.pgie] + ([args.sgie] if args.record else []), live=True):
        print("fix the errors above first (dsprobe doctor explains each)", file=sys.stderr)
        return 2
    Gst.init(None)
    args.sgie_first = args.sgie
    args.sgie = None  # build the chain PGIE -> convert; the SGIE is inserted after the probe below
    pipeline, rgba = build_pipeline(Gst, args)
    pgie = pipeline.get_by_name("pgie")
    cfg = dsprobe.load_nvinfer_config(args.pgie)
    if cfg.network_type != 100:
        print(
            "note: network-type is not 100, so nvinfer also runs its own parser; its objects stay too",
            file=sys.stderr,
        )
    # insert tracker / SGIE right after the PGIE (the probe on the PGIE's src pad runs before them)
    after = pgie
    nxt = pgie.get_static_pad("src").get_peer().get_parent_element()
    pgie.unlink(nxt)
    for name, factory, prop in (
        ("tracker", "nvtracker", args.tracker),
        ("sgie", "nvinfer", args.sgie_first),
    ):
        if not prop:
            continue
        el = Gst.ElementFactory.make(factory, name)
        el.set_property("ll-config-file" if factory == "nvtracker" else "config-file-path", prop)
        if factory == "nvtracker":
            el.set_property(
                "ll-lib-file",
                "/opt/nvidia/deepstream/deepstream/lib/libnvds_nvmultiobjecttracker.so",
            )
        pipeline.add(el)
        after.link(el)
        after = el
    after.link(nxt)
    live = dsprobe.deepstream.attach_postprocess(
        pgie,
        args.spec,
        trust=args.trust_bundle,
        unique_id=cfg.gie_unique_id,
        muxer_size=args.muxer,
        keypoints=True,
    )
    recorder = None
    if args.record:
        recorder = dsprobe.Recorder(args.record, nvinfer_config=args.pgie)
        dsprobe.deepstream.attach_recorder(
            rgba.get_static_pad("src"), recorder, muxer_size=args.muxer
        )
    loop = GLib.MainLoop()
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect(
        "message",
        lambda _b, m: (
            loop.quit() if m.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR) else None
        ),
    )
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
        if recorder is not None:
            recorder.close()
        print(f"live postprocess: {live.stats} objects added: {live.callback.objects_added}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
