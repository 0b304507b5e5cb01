"""The reader against hostile or damaged files: crafted datasets, links out of the file, truncations,
bit flips. Every case either reads (the frames it can vouch for) or raises one RecordingError naming
the file; `dsprobe inspect` prints one line and exits 2. docs/reliability.md counts the cases."""

import json
import random
import shutil

import h5py
import numpy as np
import pytest

from dsprobe import FrameRecord, ImageRecord, ObjectRecord, Recorder, open_recording
from dsprobe.cli import main as cli_main
from dsprobe.recording.reader import RecordingError

CONFIG = """[property]
gie-unique-id=1
num-detected-classes=3
labelfile-path=labels.txt
"""


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    (d / "labels.txt").write_text("car\nbike\nperson\n")
    (d / "pgie.txt").write_text(CONFIG)
    path = d / "good.h5"
    with Recorder(path, nvinfer_config=d / "pgie.txt", image_format="raw") as rec:
        for n in range(12):
            rec.record(
                FrameRecord(
                    0,
                    n,
                    unique_id=1,
                    layers={"out": np.full((6, 5), n, np.float32)},
                    detections=[ObjectRecord((1, 2, 3, 4), 1, 0.5, label="bike")],
                    image=ImageRecord(np.full((8, 8, 3), n, np.uint8), (0, 0, 8, 8)),
                )
            )
    return path


def read_all(path):
    """Everything a user reads: frames, tensors, images, objects, config, labels."""
    with open_recording(path) as r:
        for v in r:
            _ = (v.tensors, v.image, v.detection_objects, v.objects)
        if len(r):
            r.read_layer("out")
        cfg = r.config()
        return len(r), (cfg.labels() if cfg else [])


def crafted(good, tmp_path, edit):
    path = tmp_path / "crafted.h5"
    shutil.copy(good, path)
    with h5py.File(path, "r+") as f:
        edit(f, tmp_path)
    return path


def _external_link(f, d):
    secret = d / "secret.h5"
    with h5py.File(secret, "w") as s:
        s["out"] = np.zeros((12, 6, 5), np.float32)
    del f["layers/1/out"]
    f["layers/1/out"] = h5py.ExternalLink(str(secret), "/out")


def _external_storage(f, d):
    (d / "passwd").write_bytes(b"root:x:0:0" * 100)
    del f["layers/1/out"]
    f.create_dataset(
        "layers/1/out", (12, 6, 5), np.float32, external=[(str(d / "passwd"), 0, 2880)]
    )


def _vds(f, d):
    layout = h5py.VirtualLayout((12, 6, 5), np.float32)
    layout[:] = h5py.VirtualSource(str(d / "elsewhere.h5"), "/x", shape=(12, 6, 5))
    del f["layers/1/out"]
    f.create_virtual_dataset("layers/1/out", layout)


def _huge_classes(f, d):
    f["gies/1"].attrs["config_json"] = json.dumps({"text": "x", "num_detected_classes": 10**9})
    f["gies/1"].attrs["config_text"] = CONFIG.replace("=3", "=1000000000")


def _resize(name, shape):
    def edit(f, d):
        del f[name]
        f.create_dataset(
            name, shape=shape, dtype=np.float32, maxshape=(None, *shape[1:]), chunks=True
        )

    return edit


CRAFTED = {
    "external link": (_external_link, "external link"),
    "soft link": (
        lambda f, d: (
            f.__delitem__("frames/pad_index"),
            f.__setitem__("frames/pad_index", h5py.SoftLink("/frames/batch_id")),
        ),
        "soft link",
    ),
    "external storage": (_external_storage, "external files"),
    "virtual dataset": (_vds, "virtual dataset"),
    "schema version as text": (
        lambda f, d: f.attrs.__setitem__("schema_version", "1"),
        "schema_version",
    ),
    "schema version newer": (
        lambda f, d: f.attrs.__setitem__("schema_version", 99),
        "upgrade dsprobe",
    ),
    "1-D table where 2-D": (
        lambda f, d: (
            f.__delitem__("frames/network_size"),
            f.__setitem__("frames/network_size", np.zeros(12, np.int32)),
        ),
        "frames/network_size",
    ),
    "table of the wrong dtype": (
        lambda f, d: (
            f.__delitem__("frames/source_id"),
            f.__setitem__("frames/source_id", np.zeros(12, np.float64)),
        ),
        "frames/source_id",
    ),
    "table missing": (lambda f, d: f.__delitem__("detections"), "/detections"),
    "group where a layer should be": (
        lambda f, d: (f.__delitem__("layers/1/out"), f.create_group("layers/1/out")),
        "group",
    ),
    "0-d layer": (
        lambda f, d: (f.__delitem__("layers/1/out"), f.__setitem__("layers/1/out", np.float32(1))),
        "layers/1/out",
    ),
    "text layer": (
        lambda f, d: (
            f.__delitem__("layers/1/out"),
            f.__setitem__("layers/1/out", np.array([b"a"] * 12)),
        ),
        "layers/1/out",
    ),
    "enormous declared layer shape": (
        _resize("layers/1/out", (12, 100000, 100000, 100)),
        "more than the file",
    ),
    "enormous declared table": (
        lambda f, d: (
            f["frames/source_id"].resize((10**12,))
            if f["frames/source_id"].maxshape[0] is None
            else None
        ),
        "frames/source_id",
    ),
    "image encoding 7": (lambda f, d: f["images/encoding"].__setitem__(0, 7), "/images row 0"),
    "image beyond its bytes": (
        lambda f, d: f["images/nbytes"].__setitem__(3, 10**9),
        "/images row 3",
    ),
    "frame points past objects": (
        lambda f, d: f["frames/detection_start"].__setitem__(11, 500),
        "/frames row 11",
    ),
    "frame points past layers": (
        lambda f, d: f["frames/layer_row"].__setitem__(5, 99),
        "/frames row 5",
    ),
    "frames_committed disagrees": (
        lambda f, d: f.attrs.__setitem__("frames_committed", 3),
        "frames_committed",
    ),
    "frames_committed text": (
        lambda f, d: f.attrs.__setitem__("frames_committed", "12"),
        "frames_committed",
    ),
    "unequal columns in a clean file": (
        lambda f, d: f["frames/pts_ns"].resize((5,)),
        "different lengths",
    ),
    "gie group not a number": (lambda f, d: f.move("layers/1", "layers/x"), "gie-unique-id"),
    "stored labels not a list": (
        lambda f, d: f["gies/1"].attrs.__setitem__("labels_json", '{"a": 1}'),
        "labels",
    ),
    "stored config with huge num-detected-classes": (_huge_classes, "num-detected-classes"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_file_gives_one_recording_error(good, tmp_path, case, capsys):
    edit, words = CRAFTED[case]
    path = crafted(good, tmp_path, edit)
    with pytest.raises(RecordingError) as err:
        read_all(path)
    msg = str(err.value)
    assert str(path) in msg and words in msg, msg
    if "config" not in case and "labels" not in case:  # those are read on demand, not by inspect
        assert cli_main(["inspect", str(path)]) == 2
        out = capsys.readouterr().err
        assert (
            out.count("\n") == 1 and out.startswith("dsprobe inspect:") and "Traceback" not in out
        )


def test_a_crafted_stored_config_dict_gives_way_to_the_stored_text(good, tmp_path):
    def edit(f, d):
        f["gies/1"].attrs["config_json"] = json.dumps({"text": "x", "num_detected_classes": 10**9})

    with open_recording(crafted(good, tmp_path, edit)) as r:
        assert r.config().num_detected_classes == 3


def test_labels_come_from_the_recording_not_from_this_machine(good, tmp_path):
    """Moved away from its label file (a Jetson recording on a workstation), it keeps its labels; a
    stored labelfile-path such as /etc/passwd is never opened."""
    moved = tmp_path / "elsewhere" / "moved.h5"
    moved.parent.mkdir()
    shutil.copy(good, moved)
    assert read_all(moved)[1] == ["car", "bike", "person"]

    def point_at_passwd(f, d):
        cfg = json.loads(f["gies/1"].attrs["config_json"])
        cfg["labelfile_path"], cfg["path"] = "/etc/passwd", "/etc/x.txt"
        f["gies/1"].attrs["config_json"] = json.dumps(cfg)

    assert read_all(crafted(good, tmp_path, point_at_passwd))[1] == ["car", "bike", "person"]


def test_truncations_read_a_prefix_or_fail_clearly(good, tmp_path):
    data = good.read_bytes()
    cuts = sorted({int(len(data) * k / 40) for k in range(40)} | {1, 8, 100, 511, 2048})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.h5"
        path.write_bytes(data[:cut])
        try:
            n, _ = read_all(path)
            assert n <= 12
        except RecordingError as exc:
            assert str(path) in str(exc)


TRIALS = 40


def test_bit_flips_never_escape_as_other_errors(good, tmp_path):
    data = bytearray(good.read_bytes())
    rng = random.Random(7)
    outcomes = {"read": 0, "error": 0}
    for trial in range(TRIALS):
        flipped = bytearray(data)
        for _ in range(rng.choice((1, 1, 4))):
            pos = rng.randrange(len(flipped))
            flipped[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{trial}.h5"
        path.write_bytes(bytes(flipped))
        try:
            read_all(path)
            outcomes["read"] += 1
        except RecordingError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
        path.unlink()
    assert sum(outcomes.values()) == TRIALS


def test_a_file_being_written_by_another_process_says_so(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "busy.h5"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np\n"
            "from dsprobe import FrameRecord, Recorder\n"
            "r = Recorder(sys.argv[1], flush_interval_s=0.05)\n"
            "r.record(FrameRecord(0, 1, layers={'a': np.zeros(3, np.float32)}))\n"
            "print('GO', flush=True); sys.stdin.readline(); r.close()\n",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.getcwd()),
    )
    try:
        assert child.stdout.readline().strip() == "GO"
        with pytest.raises(
            RecordingError, match=rf"being written by another process \(pid {child.pid} "
        ):
            open_recording(path)
    finally:
        child.communicate("\n", timeout=30)
    with open_recording(path) as r:  # closed: it reads
        assert len(r) == 1 and r.closed_cleanly
