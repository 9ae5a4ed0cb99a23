"""Generated drives: the camera's run, exact moving masks, track ids, the written set, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from app.cli import main
from data.drives import DriveConfig, DriveGenerator, write_drives
from data.frames import instance_mask, read_coco_frames
from data.images import read_rgb
from data.scenes import SceneConfig, SceneSources

# Small frames, synthetic signs on procedural backgrounds: no real data needed.
SMALL = SceneConfig(
    width=192, height=128, min_size=10, max_size=30, large_max_size=40, signs=(3, 6)
)
RUN = DriveConfig(frames=8, zoom=2.0, fps=5.0, shake=0.0)
NO_REAL_DATA = SceneSources()


@pytest.fixture(scope="module")
def generator() -> DriveGenerator:
    return DriveGenerator(NO_REAL_DATA, SMALL, RUN)


@pytest.fixture(scope="module")
def drive(generator):
    return generator.render(5, 0)


def _centre(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def test_a_drive_is_deterministic_and_has_its_frames(generator, drive):
    assert len(drive) == RUN.frames
    again = DriveGenerator(NO_REAL_DATA, SMALL, RUN).render(5, 0)
    for ours, theirs in zip(drive, again, strict=True):
        assert np.array_equal(ours.image, theirs.image)
        assert ours.tracks == theirs.tracks
        assert [s.box for s in ours.signs] == [s.box for s in theirs.signs]
    assert all(frame.image.shape == (SMALL.height, SMALL.width, 3) for frame in drive)
    assert not np.array_equal(drive[0].image, drive[-1].image)


def test_signs_grow_and_move_away_from_one_point(generator):
    """Between the first and last frame every sign still whole in both grows by about the
    zoom, and all of them move outward from one fixed point (the vanishing point)."""
    for index in range(4):
        frames = generator.render(5, index)
        first = dict(zip(frames[0].tracks, frames[0].signs, strict=True))
        last = dict(zip(frames[-1].tracks, frames[-1].signs, strict=True))
        whole = [t for t in first if t in last and min(first[t].visible, last[t].visible) > 0.95]
        for track in whole:
            a, b = first[track], last[track]
            growth = b.size / max(1, a.size)
            assert 1.5 <= growth <= 2.6, (track, a.box, b.box)
        if len(whole) >= 2:
            # f_last = zoom * (f_first - v) + v for every sign: solve for v from one, check the rest
            zoom = RUN.zoom
            points = [(_centre(first[t].box), _centre(last[t].box)) for t in whole]
            vanishing = [(zoom * p - q) / (zoom - 1) for p, q in points]
            spread = np.ptp(np.array(vanishing), axis=0)
            assert (spread < 4).all(), vanishing


def test_masks_are_exact_warps_and_boxes_their_bounds(drive):
    for frame in drive:
        for sign in frame.signs:
            x1, y1, x2, y2 = sign.box
            assert sign.mask.shape == (y2 - y1, x2 - x1) and sign.mask.dtype == bool
            assert sign.mask[0].any() and sign.mask[-1].any()
            assert sign.mask[:, 0].any() and sign.mask[:, -1].any()
            assert 0 <= x1 < x2 <= SMALL.width and 0 <= y1 < y2 <= SMALL.height


def test_a_sign_leaving_the_frame_is_ignored_then_gone(tmp_path):
    """With a strong zoom, signs away from the vanishing point leave: cut by the edge to
    less than min_visible they are marked ignore, and once out they are no longer listed."""
    generator = DriveGenerator(NO_REAL_DATA, SMALL, DriveConfig(frames=12, zoom=4.0, shake=0.0))
    cut, left = 0, 0
    for index in range(6):
        frames = generator.render(9, index)
        first, last = set(frames[0].tracks), set(frames[-1].tracks)
        left += len(first - last)
        for frame in frames:
            for sign in frame.signs:
                x1, y1, x2, y2 = sign.box
                at_edge = min(x1, y1) == 0 or x2 == SMALL.width or y2 == SMALL.height
                cut += at_edge and sign.ignore
    assert cut > 0 and left > 0


def test_written_drives_round_trip_with_tracks_and_videos(tmp_path):
    report = write_drives(tmp_path, drives=2, seed=5, config=SMALL, drive=RUN, sources=NO_REAL_DATA)
    assert report.drives == 2 and report.frames == 2 * RUN.frames and report.tracks > 0
    frames = read_coco_frames(tmp_path)
    assert len(frames) == 2 * RUN.frames
    assert [f.video_id for f in frames] == [0] * RUN.frames + [1] * RUN.frames
    assert [f.frame_index for f in frames[: RUN.frames]] == list(range(RUN.frames))
    generator = DriveGenerator(NO_REAL_DATA, SMALL, RUN)
    tracks_of = {}
    for video in (0, 1):
        rendered = generator.render(5, video)
        for k, frame in enumerate(rendered):
            record = frames[video * RUN.frames + k]
            assert len(record.instances) == len(frame.signs)
            for instance, sign in zip(record.instances, frame.signs, strict=True):
                assert instance.box == sign.box and instance.ignore == sign.ignore
                mask = instance_mask(instance, SMALL.height, SMALL.width)
                assert np.array_equal(mask, sign.full_mask(SMALL.height, SMALL.width))
            for instance, number in zip(record.instances, frame.tracks, strict=True):
                tracks_of.setdefault((video, number), set()).add(instance.track_id)
            stored = read_rgb(record.image_path).astype(int)
            assert np.abs(stored - frame.image).mean() < 3  # JPEG at quality 95
    # one id per sign of a drive, and no id shared between signs or drives
    assert all(len(ids) == 1 for ids in tracks_of.values())
    ids = [next(iter(ids)) for ids in tracks_of.values()]
    assert len(set(ids)) == len(ids)
    document = json.loads((tmp_path / "annotations.json").read_text())
    assert [v["frames"] for v in document["videos"]] == [RUN.frames, RUN.frames]
    assert document["info"]["real_crops"] == "all"
    for video in document["videos"]:
        with av.open(str(tmp_path / video["file_name"])) as container:
            decoded = sum(1 for _ in container.decode(video=0))
        assert decoded == RUN.frames


def test_bad_drive_config_is_refused():
    bad_rates = [{"fps": fps} for fps in (0, float("inf"), float("nan"), 1000)]
    for bad in ({"frames": 0}, {"zoom": 0.5}, *bad_rates, {"min_visible": 0}):
        with pytest.raises(ValueError):
            DriveConfig(**bad)
    with pytest.raises(ValueError):
        write_drives(Path("unused"), drives=0, sources=NO_REAL_DATA)


def test_cli_writes_drives(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GREEDYSIGN_SHARED_DATA", str(tmp_path / "no-data"))
    out = tmp_path / "drives"
    code = main(
        ["data", "drives", str(out), "--drives", "1", "--frames-per-drive", "4", "--width", "160",
         "--height", "96", "--min-size", "10", "--max-size", "24", "--large-max-size", "30"]
    )  # fmt: skip
    assert code == 0
    assert "wrote 1 drives of 4 frames" in capsys.readouterr().out
    assert len(read_coco_frames(out)) == 4 and (out / "videos" / "drive-000.mp4").is_file()
    assert main(["data", "drives", str(out), "--zoom", "0.5"]) == 2


def test_a_canvas_too_large_to_render_is_refused_saying_why():
    """A drive renders its scene zoom times the frame: a frame that is fine alone may not be."""
    frame = SceneConfig(width=8192, height=8192)
    with pytest.raises(ValueError, match="canvas is 2 times its frame: .* not 16384x16384"):
        DriveGenerator(NO_REAL_DATA, frame, DriveConfig(zoom=2.0))
    DriveGenerator(NO_REAL_DATA, SceneConfig(), DriveConfig(zoom=8.0))  # 10240x5760: fine


@pytest.mark.parametrize(
    "flags",
    [
        ["--fps", "inf"],
        ["--fps", "nan"],
        ["--width", "8192", "--height", "4096"],
        ["--dfg", "no-such-dfg"],
    ],
)
def test_cli_refuses_a_bad_option_writing_nothing(flags, tmp_path, capsys):
    """--fps inf ended in a traceback; --fps nan failed only after the first drive's folders
    were made, and they were left behind."""
    out = tmp_path / "drives"
    assert (
        main(["data", "drives", str(out), "--drives", "1", "--frames-per-drive", "2", *flags]) == 2
    )
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert not out.exists()
