#!/usr/bin/env python3
"""PGIE -> SGIE -> probe: a tuned detector postprocess, then a secondary model's tuned classifier
and embedding postprocesses, live in DeepStream (on the device, with pyds).

    python3 examples/deepstream_secondary.py --pgie dsprobe/sample/config_infer_primary.txt \
        --spec tuned.json --sgie dsprobe/sample/config_infer_secondary.txt \
        --classifier-threshold 0.6 file:///path/stream0.mp4

* PGIE (network-type=100, output-tensor-meta=1): ``--spec`` adds NvDsObjectMeta with
  ``unique_component_id`` = the PGIE's gie-unique-id (the SGIE's ``operate-on-gie-id``).
* SGIE (process-mode=2, network-type=100, output-tensor-meta=1, classifier-async-mode=0) runs on those
  objects; on its src pad dsprobe's classifier postprocess (``decode classifier`` at the tuned
  ``--classifier-threshold``, layer ``--color-layer``) attaches an NvDsClassifierMeta + NvDsLabelInfo
  to each object, and the embedding postprocess (layer ``--embedding-layer``) attaches the L2-normalised
  vector as object user meta (``{int32 dim; float32 v[dim]}``, see docs/secondary-models.md).
* A downstream probe prints, for the first frames, each object's label, its classification and the
  first values of its vector: what an application (or a tracker's re-id) reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # deepstream_record's pipeline helpers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("uris", nargs="+")
    ap.add_argument("--pgie", required=True, help="PGIE config (network-type=100)")
    ap.add_argument("--spec", required=True, help="the PGIE's tuned postprocess spec (notebook 04)")
    ap.add_argument("--sgie", required=True, help="SGIE config (process-mode=2, network-type=100)")
    ap.add_argument("--classifier-threshold", type=float, help="default: the SGIE config's")
    ap.add_argument("--color-layer", default="color", help="the classifier's output layer")
    ap.add_argument("--embedding-layer", default="embedding", help="the embedding's output layer")
    ap.add_argument(
        "--muxer", type=lambda s: tuple(int(v) for v in s.split("x")), default=(1280, 720)
    )
    ap.add_argument("--print-frames", type=int, default=5, help="frames to print objects of")
    ap.add_argument("--display", action="store_true")
    return ap.parse_args(argv)


def describe(pyds, obj_meta) -> str:
    """One object as an app downstream of the SGIE sees it: label, classifications, vector."""
    from dsprobe.deepstream import read_vector_user_meta
    from dsprobe.deepstream.meta import classifications, iter_list

    kind = pyds.nvds_get_user_meta_type("DSPROBE.VECTOR.USER_META")
    vecs = [
        read_vector_user_meta(pyds, um)
        for um in map(pyds.NvDsUserMeta.cast, iter_list(obj_meta.obj_user_meta_list))
        if int(um.base_meta.meta_type) == int(kind)
    ]
    cls = ", ".join(f"{c.label} {c.confidence:.2f}" for c in classifications(pyds, obj_meta))
    vec = (
        f"{vecs[0].shape[0]}-d [{', '.join(f'{v:.3f}' for v in vecs[0][:4])}, ...]" if vecs else "-"
    )
    return f"{obj_meta.obj_label}: {cls or 'no label'}; embedding {vec}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import gi

    gi.require_version("Gst", "1.0")
    import pyds
    from deepstream_record import build_pipeline, check_configs
    from gi.repository import GLib, Gst

    import dsprobe
    import dsprobe.deepstream as dsd
    from dsprobe.deepstream.meta import frame_metas, object_metas

    if not check_configs([args.pgie, args.sgie], live=True):
        print("fix the errors above first (dsprobe doctor explains each)", file=sys.stderr)
        return 2
    Gst.init(None)
    pipeline, rgba = build_pipeline(Gst, args)  # mux -> pgie -> sgie -> convert -> rgba -> sink
    pgie, sgie = pipeline.get_by_name("pgie"), pipeline.get_by_name("sgie")
    pcfg, scfg = dsprobe.load_nvinfer_config(args.pgie), dsprobe.load_nvinfer_config(args.sgie)
    det = dsd.attach_postprocess(
        pgie, args.spec, unique_id=pcfg.gie_unique_id, muxer_size=args.muxer
    )
    cls_pp = dsprobe.classifier_postprocess(scfg, [args.color_layer], args.classifier_threshold)
    emb_pp = dsprobe.embedding_postprocess(scfg, args.embedding_layer)
    uid = scfg.gie_unique_id
    cls = dsd.attach_postprocess(
        sgie, cls_pp, unique_id=uid, output="classifier", muxer_size=args.muxer
    )
    emb = dsd.attach_postprocess(
        sgie, emb_pp, unique_id=uid, output="embedding", muxer_size=args.muxer
    )
    printed = [0]

    def show(pad, info, _ud):
        if printed[0] < args.print_frames:
            bm = pyds.gst_buffer_get_nvds_batch_meta(hash(info.get_buffer()))
            for fm in frame_metas(pyds, bm):
                print(f"source {fm.source_id} frame {fm.frame_num}:")
                for om in object_metas(pyds, fm):
                    print("  " + describe(pyds, om))
                printed[0] += 1
        return Gst.PadProbeReturn.OK

    rgba.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, show, None)
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
        pyds.unset_callback_funcs()  # the vector user meta registered copy/release callbacks
        print(
            f"detector: {det.stats}; classifier metas added: {cls.callback.classifier_metas_added}"
        )
        print(f"vectors attached: {emb.callback.vectors_added}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
