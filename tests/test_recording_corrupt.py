"""Bad files get one clear RecordingError naming the file and the problem; `dsprobe inspect` on real files."""

import json
import shutil

import h5py
import numpy as np
import pytest

from dsprobe import FrameRecord, ImageRecord, ObjectRecord, Recorder, open_recording
from dsprobe.cli import main as cli_main
from dsprobe.recording.reader import RecordingError


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.h5"
    with Recorder(
        path,
        nvinfer_config="tests/data/configs/pgie_yolo.txt",
        image_format="raw",
        notes="field test",
    ) as rec:
        for n in range(20):
            rec.record(
                FrameRecord(
                    n % 2,
                    n,
                    pts_ns=n * 40_000_000,
                    network_size=(640, 640, 3),
                    frame_size=(1920, 1080),
                    layers={"output0": np.full((84, 100), n, np.float32)},
                    detections=[ObjectRecord((1, 2, 3, 4), 0, 0.9)],
                    image=ImageRecord(np.full((36, 64, 3), n, np.uint8), (0, 0, 1920, 1080)),
                )
            )
        rec.update_stats("probe", {"probe_ms_p50": 0.4})
    return path


def test_not_hdf5_empty_and_missing(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not HDF5" * 100)
    with pytest.raises(RecordingError, match=r"junk\.h5: cannot open as HDF5"):
        open_recording(junk)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(RecordingError, match=r"empty\.h5: empty file"):
        open_recording(empty)
    with pytest.raises(RecordingError, match=r"nothing\.h5: no such recording"):
        open_recording(tmp_path / "nothing.h5")
    (tmp_path / "dir").mkdir()
    with pytest.raises(RecordingError, match="no .h5 recording files"):
        open_recording(tmp_path / "dir")


def test_hdf5_but_not_a_recording(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(
        RecordingError, match=r"other\.h5: an HDF5 file but not a dsprobe recording"
    ):
        open_recording(path)


def test_newer_schema_is_refused(good):
    with h5py.File(good, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(
        RecordingError, match=r"good\.h5: written with recording schema 99.*upgrade dsprobe"
    ):
        open_recording(good)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file(good, tmp_path, keep):
    cut = tmp_path / "cut.h5"
    data = good.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(RecordingError, match=r"cut\.h5: .*(truncated|damaged)"):
        with open_recording(cut) as r:  # the error may come when opening or when reading data
            for v in r:
                _ = v.tensors, v.image


def test_missing_table_is_named(good):
    with h5py.File(good, "a") as f:
        del f["detections"]
    with pytest.raises(RecordingError, match=r"good\.h5: table /detections is missing"):
        open_recording(good)


def test_corrupt_chunk_is_reported_with_the_file(tmp_path):
    # garbage in raw (uncompressed) data is silently wrong data; in a gzip chunk it fails to decode
    gz = tmp_path / "gz.h5"
    with Recorder(gz, compression="gzip", images=False) as rec:
        for n in range(5):
            rec.record(FrameRecord(0, n, layers={"output0": np.full((84, 100), n, np.float32)}))
    with h5py.File(gz, "r") as f:
        info = f["layers/1/output0"].id.get_chunk_info(0)
    raw = bytearray(gz.read_bytes())
    raw[info.byte_offset : info.byte_offset + info.size] = b"\xff" * info.size
    gz.write_bytes(bytes(raw))
    with open_recording(gz) as r:
        with pytest.raises(RecordingError, match=r"gz\.h5: cannot read layer 'output0'"):
            _ = r[0].tensors
        with pytest.raises(RecordingError, match=r"gz\.h5: cannot read layer 'output0'"):
            r.read_layer("output0")


def test_folder_with_two_recordings_is_refused(good, tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(good, folder / "a.h5")
    Recorder(folder / "b.h5").close()
    with pytest.raises(RecordingError, match="2 different recordings"):
        open_recording(folder)


def test_reader_api_on_good_file(good):
    with open_recording(good) as r:
        assert r.attrs["host"] and r.attrs["schema_version"] == 1 and r.notes == "field test"
        assert r.config().preprocessing.maintain_aspect_ratio
        assert "[property]" in r.config_text()
        assert r.stats["probe"] == {"probe_ms_p50": 0.4}
        assert r.frames["has_image"].all() and (r.frames["num_detections"] == 1).all()
        assert r.object_table("detections")["row"].tolist() == list(range(20))
        with pytest.raises(KeyError, match="no layer 'nope'.*output0"):
            r.read_layer("nope")


def test_inspect_text_and_json(good, capsys):
    assert cli_main(["inspect", str(good)]) == 0
    text = capsys.readouterr().out
    for needle in (
        "frames     20",
        "output0",
        "float32",
        "[84, 100]",
        "gie 1",
        "source 0 gie 1: 10 frames",
        "maintain-aspect-ratio=1",
        "raw 20",
        "20 detections",
        "probe_ms_p50=0.4",
        "closed     cleanly",
        "dropped_queue_full=0",
        "field test",
    ):
        assert needle in text, needle
    assert cli_main(["inspect", str(good), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["frames"] == 20 and s["layers"][0] == {
        "key": "output0",
        "name": "output0",
        "dtype": "float32",
        "shape": [84, 100],
        "unique_id": 1,
        "per_object": False,
    }
    assert s["gies"]["1"]["preprocessing"]["network_width"] == 640
    assert s["time_span_s"] == pytest.approx(19 * 0.04)
    assert s["recorder_stats"]["written"] == 20 and s["file_size_bytes"] == good.stat().st_size
    assert s["images"] == {"frames_with_image": 20, "stored": {"raw": 20}}


def test_inspect_bad_file_exits_1(tmp_path, capsys):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"x" * 10)
    assert cli_main(["inspect", str(junk)]) == 2
    err = capsys.readouterr().err
    assert "junk.h5" in err and "Traceback" not in err
