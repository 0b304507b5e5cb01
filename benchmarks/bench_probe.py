"""Probe cost on the streaming thread: attach_recorder's callback for a batch of 4 frames, each with a
YOLOv8-640 output (84x8400 float32) and a 640x360 pitched RGBA surface, vs a plain numpy copy of the
same bytes, tensors and RGBA surfaces copied whole (the least any recorder must do before the buffer
goes back to nvinfer's pool; the probe also drops alpha, building RGB).

Runs the real probe code and a real Recorder (JPEG, HDF5 on its writer thread) against
tests/pyds_double.py, the pyds TEST DOUBLE (no DeepStream here): the meta walk, the ctypes reads of
the pointer arrays and the copies are the real work; pyds' own per-call overhead on a device is not
in it. The probe, the plain copy and the variants run interleaved (each first in turn) on the same
buffers; the figures are medians over batches, side by side in one run.

Then (issue 20, item 6) the probe's tail latency under a writer at full load: batches at 30 fps into a
Recorder whose writer cannot keep up (JPEG + HDF5 of 4 x 3.7 MB per batch on this machine), with the
writer on a thread of this process ("thread"), in a writer process fed through the shared-memory ring
("ring", the probe copying into it), in the writer process of an earlier commit fed through a pipe
("pipe", ``--pipe-rev``, extracted with ``git archive``), and no recorder at all, the same bytes
copied plainly ("copy": what the machine itself does to a copy's tail). Each contender's round runs
in a fresh interpreter, the rounds interleaved in random order. Per batch: wall time, the probe
thread's CPU time, and its wait for a CPU (``/proc/thread-self/schedstat``): wall - CPU - that
wait is time blocked (the GIL, a lock). Target: the probe's p99 per batch <= 2x its median and
<= 5 ms.

    .venv/bin/python benchmarks/bench_probe.py [--batches 40] [--load-rounds 5] [--load-batches 90]
        [--pipe-rev 84bc5d6] [--contenders thread,ring,pipe,copy]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import pyds_double as pyds  # noqa: E402
from _timing import row  # noqa: E402

from dsprobe import Recorder  # noqa: E402
from dsprobe.deepstream.probe import RecorderProbe  # noqa: E402

BATCH, MUX, LAYER = 4, (640, 360), (84, 8400)


def make_batch(
    pipe: pyds.Pipeline, gie: pyds.GieOutput, out: np.ndarray, img: np.ndarray, k: int
) -> tuple[pyds.ProbeInfo, list[np.ndarray], list[np.ndarray]]:
    """One batch in the double: tensor meta + surface per frame; also numpy views of the same bytes."""
    buf = pyds.Buffer()
    frames, tensor_views, surfaces = [], [], []
    for b in range(BATCH):
        fm = pipe.frame(b, k, b, MUX)
        um = pipe.tensor_meta(gie, {"output0": out})
        fm._user.append(um)
        tm = pyds.NvDsInferTensorMeta.cast(um.user_meta_data)
        raw = (ctypes.c_char * out.nbytes).from_address(tm._ptr_array[0])
        tensor_views.append(np.frombuffer(raw, np.float32).reshape(out.shape))
        frames.append(fm)
        pipe.surface(buf, b, img)
        surfaces.append(pyds._surfaces[(hash(buf), b)].view)
    pyds._batch_metas[hash(buf)] = pyds.NvDsBatchMeta(frames)
    return pyds.ProbeInfo(buf), tensor_views, surfaces


class KeepingRecorder:
    """Takes records like the Recorder but only keeps the last few: no writer thread, no HDF5."""

    images, image_max_size, layers = True, 640, None

    def __init__(self) -> None:
        self.kept: list = []
        self.images = True

    def admit(self, source_id: int, pts_ns: int, unique_id: int = 0) -> bool:
        return True

    def record(self, frame: object, *, admitted: bool = False) -> bool:
        self.kept = self.kept[-2 * BATCH :] + [frame]
        return True

    def update_stats(self, section: str, values: dict) -> None:
        pass


def minor_faults() -> int:
    """Minor page faults of this thread so far (first touches of freshly allocated memory)."""
    return resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)).ru_minflt


def plain_copy(tensor_views: list[np.ndarray], surfaces: list[np.ndarray]) -> list:
    """The bytes as they are: each tensor and each RGBA surface (pitch dropped) copied whole."""
    return [(t.copy(), np.array(s, copy=True, order="C")) for t, s in zip(tensor_views, surfaces)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--load-rounds", type=int, default=5, help="interleaved rounds under load")
    ap.add_argument("--load-batches", type=int, default=90, help="batches per round (30 fps)")
    ap.add_argument("--gil-rounds", type=int, default=3, help="rounds of the GIL-wait measurement")
    ap.add_argument(
        "--pipe-rev",
        default="84bc5d6",
        help="commit whose writer='process' is the pipe one ('' to leave it out)",
    )
    ap.add_argument("--contenders", default="thread,ring,pipe,copy")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a round, in a fresh process
    args = ap.parse_args()
    if args.one:
        with pyds.installed(), tempfile.TemporaryDirectory(dir=out_dir()) as tmp:
            print(json.dumps(probe_times(args.one, args.load_batches, Path(tmp), load_data())))
        return
    with pyds.installed():
        if args.batches:
            run(args.batches)
        if args.gil_rounds:
            gil_waits(args.gil_rounds)
        if args.load_rounds:
            under_load(args.load_rounds, args.load_batches, args.contenders, args.pipe_rev)


def gil_waits(rounds: int, seconds: float = 1.0) -> None:
    """How long a thread that gives up the GIL (as the probe does around each copy) waits to get it
    back while another thread runs one kind of writer work in a loop: what a writer thread costs the
    probe, kind by kind (random order per round; medians of the rounds' median and p99 waits)."""
    import io
    import threading

    import h5py
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        f = h5py.File(Path(tmp) / "gil.h5", "w")
        ds = f.create_dataset(
            "x", (0, *LAYER), maxshape=(None, *LAYER), dtype="f4", chunks=(1, *LAYER)
        )
        arr = np.random.default_rng(0).random(LAYER, dtype=np.float32)
        img = np.random.default_rng(1).integers(0, 255, (MUX[1], MUX[0], 3), dtype=np.uint8)
        rows = [0]

        def h5_write() -> None:
            ds.id.set_extent((rows[0] + 1, *LAYER))
            ds.id.write_direct_chunk((rows[0], 0, 0), arr)
            rows[0] += 1

        def jpeg() -> None:
            Image.fromarray(img).save(io.BytesIO(), "JPEG", quality=90)

        def python_loop() -> None:
            sum(range(20000))

        kinds = {
            "nothing (idle writer)": lambda: time.sleep(0.01),
            "numpy copy of a YOLOv8 output (2.8 MB)": lambda: arr.copy(),
            "h5py write_direct_chunk of it": h5_write,
            "Pillow JPEG of a 640x360 image": jpeg,
            "plain Python (a writer's bookkeeping)": python_loop,
        }
        got: dict[str, list] = {k: [] for k in kinds}
        rng = random.Random(1)
        for _ in range(rounds):
            order = list(kinds)
            rng.shuffle(order)
            for name in order:
                stop = threading.Event()

                def worker(op=kinds[name], stop=stop) -> None:
                    while not stop.is_set():
                        op()

                t = threading.Thread(target=worker)
                t.start()
                waits = []
                t_end = time.perf_counter() + seconds
                while time.perf_counter() < t_end:
                    t0 = time.perf_counter()
                    time.sleep(0.0005)  # gives up the GIL, as a copy or a pyds call does
                    waits.append(time.perf_counter() - t0 - 0.0005)
                stop.set()
                t.join()
                w = np.array(waits) * 1e3
                got[name].append((np.median(w), np.percentile(w, 99)))
        f.close()
    print(
        f"\nGIL waits of a thread beside one writer job ({rounds} rounds of {seconds:.0f} s, random "
        f"order; load average {os.getloadavg()[0]:.1f}): median and p99 ms, median of the rounds"
    )
    for name, res in got.items():
        med, p99 = np.median([r[0] for r in res]), np.median([r[1] for r in res])
        print(f"  {name:<40} median {med:7.3f} ms   p99 {p99:7.2f} ms")


P99_RATIO_TARGET, P99_MS_TARGET = 2.0, 5.0


def out_dir() -> Path | None:
    return ROOT / "out" if (ROOT / "out").is_dir() else None


def load_data() -> tuple:
    rng = np.random.default_rng(1)
    out = rng.random(LAYER, dtype=np.float32)
    img = rng.integers(0, 255, (MUX[1], MUX[0], 3), dtype=np.uint8)
    gie = pyds.GieOutput(1, {"output0": (0, LAYER)}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    return out, img, gie, pyds.Pipeline(MUX)


def schedstat() -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting for one) of this thread so far (0, 0 if unknown)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run, wait = f.read().split()[:2]
        return int(run), int(wait)
    except (OSError, ValueError):
        return 0, 0


def probe_times(writer: str, batches: int, tmp: Path, data: tuple) -> dict:
    """Per-batch probe wall, CPU and CPU-wait seconds over ``batches`` batches at 30 fps into a
    Recorder (``writer`` "thread" or "process"), or plain copies of the same bytes ("copy")."""
    out, img, gie, pipe = data
    rec = probe = None
    if writer != "copy":
        rec = Recorder(tmp / f"load_{writer}.h5", image_max_size=640, writer=writer, overwrite=True)
        probe = RecorderProbe(rec, muxer_size=MUX, jetson=False)
    wall, cpu, waits = [], [], []
    kept: list = []
    t_next = time.perf_counter()
    for k in range(batches):
        info, views, surfaces = make_batch(pipe, gie, out, img, k)
        s0, c0 = schedstat(), time.thread_time()
        t0 = time.perf_counter()
        if probe is not None:
            probe(pipe.pad, info)
        else:
            kept = [plain_copy(views, surfaces)]  # held until the next batch, as records are
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        waits.append((schedstat()[1] - s0[1]) * 1e-9)
        pipe._live = []
        t_next += 1 / 30
        time.sleep(max(0.0, t_next - time.perf_counter()))
    del kept
    st: dict = {"written": 0, "dropped_queue_full": 0, "writer_cpu_s": 0.0}
    in_place = 0
    if rec is not None:
        process = getattr(rec, "_process", None)
        in_place = getattr(getattr(process, "producer", None), "in_place", 0)
        rec.close()
        st = rec.stats
    w, c, q = (np.array(v[10:]) for v in (wall, cpu, waits))  # the first batches: warm-up
    return {
        "median": float(np.median(w)),
        "p99": float(np.percentile(w, 99)),
        "max": float(w.max()),
        "cpu_median": float(np.median(c)),
        "cpu_p99": float(np.percentile(c, 99)),
        "wait_p99": float(np.percentile(q, 99)),
        "blocked_p99": float(np.percentile(np.maximum(0.0, w - c - q), 99)),
        "written": st["written"],
        "dropped": st["dropped_queue_full"],
        "writer_cpu": st["writer_cpu_s"],
        "in_place": in_place,
    }


def extract(rev: str) -> Path:
    """The dsprobe package of commit ``rev`` in a temporary folder (``git archive``)."""
    dest = Path(tempfile.mkdtemp(prefix="bench_probe_rev_", dir=out_dir()))
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "dsprobe"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


def one_round(writer: str, batches: int, tree: Path) -> dict:
    """One contender's round in a fresh interpreter importing dsprobe from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, __file__, "--one", writer, "--load-batches", str(batches)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if res.returncode:
        raise RuntimeError(f"{writer} round failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def under_load(rounds: int, batches: int, contenders: str, pipe_rev: str) -> None:
    names = [c for c in contenders.split(",") if c and (c != "pipe" or pipe_rev)]
    trees = {"thread": ROOT, "ring": ROOT, "copy": ROOT}
    writers = {"thread": "thread", "ring": "process", "pipe": "process", "copy": "copy"}
    if "pipe" in names:
        try:
            trees["pipe"] = extract(pipe_rev)
        except (OSError, subprocess.CalledProcessError) as exc:  # no git, or not that history
            print(f"pipe writer of {pipe_rev} left out: cannot extract it ({exc})")
            names.remove("pipe")
    got: dict[str, list[dict]] = {c: [] for c in names}
    loads = []
    order_rng = random.Random(0)
    try:
        for _ in range(rounds):
            order = list(names)
            order_rng.shuffle(order)
            for name in order:
                got[name].append(one_round(writers[name], batches, trees[name]))
            loads.append(os.getloadavg()[0])
    finally:
        if "pipe" in trees:
            shutil.rmtree(trees["pipe"], ignore_errors=True)
    print(
        f"\nprobe under a writer at full load: batches of {BATCH} x (YOLOv8 84x8400 + 640x360 image) at "
        f"30 fps, {batches} batches per round ({batches - 10} timed), {rounds} interleaved rounds, "
        f"each in a fresh interpreter; load average {min(loads):.1f}-{max(loads):.1f} on "
        f"{os.cpu_count()} CPUs"
        + (f"; pipe = writer='process' of {pipe_rev}" if "pipe" in names else "")
    )
    print(
        f"  {'writer':<7} {'median ms':>17} {'p99 ms':>19} {'p99/median':>17} {'max ms':>18}"
        f" {'CPU med/p99':>12} {'wait/blocked p99':>17} {'written/dropped':>16}"
    )
    for name, res in got.items():

        def col(key: str, r: list = res) -> str:
            v = [x[key] * 1e3 for x in r]
            return f"{np.median(v):6.2f} [{min(v):.2f}-{max(v):.2f}]"

        def med(key: str, r: list = res) -> float:
            return float(np.median([x[key] for x in r])) * 1e3

        ratios = [x["p99"] / x["median"] for x in res]
        p99, ratio = med("p99"), float(np.median(ratios))
        ok = ratio <= P99_RATIO_TARGET and p99 <= P99_MS_TARGET
        print(
            f"  {name:<7} {col('median'):>17} {col('p99'):>19} "
            f"{ratio:5.2f} [{min(ratios):.2f}-{max(ratios):.2f}] {col('max'):>18} "
            f"{med('cpu_median'):5.2f}/{med('cpu_p99'):5.2f} "
            f"{med('wait_p99'):7.2f}/{med('blocked_p99'):6.2f}    "
            f"{sum(x['written'] for x in res):>6}/{sum(x['dropped'] for x in res):<6}"
        )
        extra = ""
        if name == "ring":
            extra = f"; {sum(x['in_place'] for x in res)} frames copied by the probe straight into the ring"
        print(
            f"          p99/median {ratio:.2f} vs target {P99_RATIO_TARGET:.0f}x "
            f"(measured/target {ratio / P99_RATIO_TARGET:.2f}); p99 {p99:.2f} ms vs {P99_MS_TARGET:.0f} ms "
            f"(measured/target {p99 / P99_MS_TARGET:.2f}): {'OK' if ok else 'MISSED'}{extra}"
        )
    print(
        "  (CPU: the probe thread's own CPU time per batch; wait: runnable, waiting for a CPU; "
        "blocked: wall - CPU - wait, i.e. waiting for the GIL or a lock)"
    )


def run(batches: int) -> None:
    rng = np.random.default_rng(0)
    out = rng.random(LAYER, dtype=np.float32)
    img = rng.integers(0, 255, (MUX[1], MUX[0], 3), dtype=np.uint8)
    gie = pyds.GieOutput(1, {"output0": (0, LAYER)}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    pipe = pyds.Pipeline(MUX)
    probe_t, copy_t, skip_t, keep_t, tiny_t = [], [], [], [], []
    faults: dict[str, list[int]] = {"probe": [], "copy": [], "keep": []}
    copies: list = []  # the plain copies are kept a while too, as the recorder keeps its records
    tiny_gie = pyds.GieOutput(1, {"output0": (0, (1,))}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(Path(tmp) / "bench.h5", image_max_size=640, queue_size=256)
        probe = RecorderProbe(rec, muxer_size=MUX, jetson=False)
        skipping = RecorderProbe(
            Recorder(Path(tmp) / "skip.h5", every_n=10**9), muxer_size=MUX, jetson=False
        )
        keeping = RecorderProbe(KeepingRecorder(), muxer_size=MUX, jetson=False)
        fixed = RecorderProbe(KeepingRecorder(), muxer_size=MUX, jetson=False, images=False)
        for k in range(batches + 5):
            info, views, surfaces = make_batch(pipe, gie, out, img, k)
            runs = {
                "probe": (lambda info=info: probe(pipe.pad, info), probe_t),
                "copy": (lambda v=views, s=surfaces: copies.append(plain_copy(v, s)), copy_t),
                "skip": (lambda info=info: skipping(pipe.pad, info), skip_t),
                "keep": (lambda info=info: keeping(pipe.pad, info), keep_t),
            }  # keeps each stream's first frame only
            names = list(runs)
            for what in (
                names[k % 4 :] + names[: k % 4]
            ):  # each goes first in turn (cache, writer thread)
                fn, times = runs[what]
                f0 = minor_faults()
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
                faults.get(what, []).append(minor_faults() - f0)
            tiny_info, _, _ = make_batch(pipe, tiny_gie, np.zeros(1, np.float32), img, k)
            t0 = time.perf_counter()
            fixed(pipe.pad, tiny_info)
            tiny_t.append(time.perf_counter() - t0)
            del copies[:-2]
            pipe._live = []  # nvinfer's pool takes the buffers back
            time.sleep(0.03)  # a 30 fps pipeline: the writer thread gets the CPU between batches
        rec.close()
        skipping.recorder.close()
        rstats, pstats = rec.stats, probe.stats.as_dict()
    warm = slice(5, None)
    p, c = statistics.median(probe_t[warm]), statistics.median(copy_t[warm])
    s, kp, tiny = (statistics.median(t[warm]) for t in (skip_t, keep_t, tiny_t))
    ratios = np.array(probe_t[warm]) / np.array(copy_t[warm])  # same batch, same buffers
    mb = BATCH * (out.nbytes + MUX[0] * MUX[1] * 4) / 1e6
    print(
        f"batch of {BATCH} frames: {BATCH} x ({LAYER[0]}x{LAYER[1]} float32 + {MUX[0]}x{MUX[1]} pitched RGBA "
        f"surface) = {mb:.1f} MB copied; {batches} batches, median"
    )
    print(row("plain numpy copy of the same bytes (RGBA)", c))
    print(
        row("attach_recorder probe (walk, copies, record())", p, c, "of the copy (target <= 1.5x)")
    )
    print(row("probe on a rate-limited batch (nothing copied)", s, c, "of the copy"))
    print(row("probe, no writer thread, memory reused", kp, c, "of the copy"))
    print(row("probe, 1-element layers, no image (fixed cost)", tiny, c, "of the copy"))
    print(
        f"  per-batch ratio probe/copy: median {np.median(ratios):.2f}, p90 {np.percentile(ratios, 90):.2f}; "
        f"page faults per batch (fresh memory for the copies): copy {np.median(faults['copy'][warm]):.0f}, "
        f"probe {np.median(faults['probe'][warm]):.0f}, without writer {np.median(faults['keep'][warm]):.0f}"
    )
    print(
        f"  probe stats (as stored in the recording): mean {pstats['probe_ms_mean']:.2f} ms, "
        f"p99 {pstats['probe_ms_p99']:.2f} ms per batch; recorder wrote {rstats['written']} frames, "
        f"dropped {rstats['dropped_queue_full']} (queue full)"
    )


if __name__ == "__main__":
    main()
