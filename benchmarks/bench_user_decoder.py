"""Live cost of a user's decoder vs the same decoder built in: attach_postprocess's probe per frame
(YOLOv8-640 layout, 80 classes, 4 frames per batch) with the registered ``yolov8`` decoder, and with
the very same code as the user's own function (a copy of the function object, not registered: it takes
the user path, whose output is checked for type and NaN / inf boxes and whose exceptions are wrapped).
The ratio is the user path's overhead; target <= 1.05x.

Both probes run interleaved on the same tensors (each first in turn), ``--rounds`` rounds of
``--batches`` batches; medians per round, and their range over rounds. The probe runs against
tests/pyds_double.py, the pyds TEST DOUBLE (no DeepStream here)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import pyds_double as pyds  # noqa: E402
from bench_postprocess import spec, yolov8_output  # noqa: E402

from dsprobe import Postprocess  # noqa: E402
from dsprobe.deepstream import bindings  # noqa: E402
from dsprobe.deepstream.live import PostprocessProbe  # noqa: E402
from dsprobe.postprocess.registry import get_step, is_builtin  # noqa: E402

BATCH, MUX = 4, (1280, 720)
TARGET = 1.05


def user_copy(fn: types.FunctionType) -> types.FunctionType:
    """The same code as a new, unregistered function object (what a user's own decoder is)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, "user_" + fn.__name__, fn.__defaults__)
    copy.__kwdefaults__ = dict(fn.__kwdefaults__ or {})
    copy.__annotations__ = dict(fn.__annotations__)
    copy.__qualname__ = "user_" + fn.__qualname__
    return copy


def one_round(probes: dict, outs: list, batches: int, k0: int) -> dict[str, float]:
    gie = pyds.GieOutput(1, {"output0": (0, (84, 8400))}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    pipe = pyds.Pipeline(MUX)
    times: dict[str, list[float]] = {name: [] for name in probes}
    for k in range(batches):
        order = list(probes) if k % 2 == 0 else list(probes)[::-1]  # each first in turn
        for name in order:
            buf = pyds.Buffer()
            frames = []
            for b in range(BATCH):
                fm = pipe.frame(b, k0 + k, b, MUX)
                fm._user.append(pipe.tensor_meta(gie, {"output0": outs[(k + b) % len(outs)]}))
                frames.append(fm)
            pyds._batch_metas[hash(buf)] = pyds.NvDsBatchMeta(frames)
            t0 = time.perf_counter()
            probes[name](pipe.pad, pyds.ProbeInfo(buf))
            times[name].append((time.perf_counter() - t0) / BATCH)
    return {name: statistics.median(t) for name, t in times.items()}


def main(rounds: int = 5, batches: int = 40) -> None:
    bindings.use_bindings(pyds, pyds.Gst)
    rng = np.random.default_rng(0)
    outs = [yolov8_output(rng) for _ in range(8)]
    builtin = spec()
    steps = [s.to_dict() for s in builtin.steps]
    steps[0]["name"] = user_copy(get_step("decode", "yolov8"))
    user = Postprocess(steps)
    assert is_builtin(builtin.step_function(0)) and not is_builtin(user.step_function(0))
    probes = {
        "built in": PostprocessProbe(builtin, muxer_size=MUX, unique_id=1),
        "user": PostprocessProbe(user, muxer_size=MUX, unique_id=1),
    }
    one_round(probes, outs, 4, 0)  # warm-up
    results = [one_round(probes, outs, batches, 1000 * (r + 1)) for r in range(rounds)]
    for name, probe in probes.items():
        assert not probe.stats.errors, (name, probe.stats.errors)
    ratios = [r["user"] / r["built in"] for r in results]
    med = {name: statistics.median(r[name] for r in results) for name in probes}
    print(
        f"live probe per frame, YOLOv8-640 (84x8400), {rounds} rounds x {batches} batches x {BATCH}"
    )
    print(f"  built-in yolov8 decoder       {med['built in'] * 1e3:8.3f} ms")
    print(f"  same code as a user function  {med['user'] * 1e3:8.3f} ms")
    print(
        f"  user / built in: median {statistics.median(ratios):.3f}x "
        f"(range {min(ratios):.3f}-{max(ratios):.3f}x over rounds)   target <= {TARGET:.2f}x"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=40)
    a = ap.parse_args()
    main(a.rounds, a.batches)
