"""Scoring tracks through annotated videos (model/track_eval.py): perfect answers score
perfectly, each kind of mistake is counted where it belongs, and the real tracker keeps one
id per sign through generated drives when every sign is found."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from data.drives import DriveConfig, write_drives
from data.frames import read_coco_frames
from data.images import read_rgb
from data.records import DataError
from data.scenes import SceneConfig, SceneSources, write_scenes
from model.track import Tracker
from model.track_eval import Shown, evaluate_tracking_folder, score, videos_of

SMALL = SceneConfig(
    width=192, height=128, min_size=10, max_size=30, large_max_size=40, signs=(3, 6)
)


@dataclass
class Found:
    """What the tracker reads of a detection (model.detect.Detection's fields)."""

    box: tuple[int, int, int, int]
    class_id: int | None
    class_name: str = "a sign"
    kind: str = "sign"
    confidence: float = 0.9
    mask: np.ndarray = field(default_factory=lambda: np.ones((1, 1), bool))


@pytest.fixture(scope="module")
def drives(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("drives")
    run = DriveConfig(frames=10, zoom=2.0, shake=1.0)
    write_drives(out, drives=3, seed=2, config=SMALL, drive=run, sources=SceneSources())
    return out


def _truth_answers(videos, relabel=None) -> list[list[list[Shown]]]:
    """Every counted sign answered with its own box, track id and class."""
    relabel = relabel or (lambda video, k, sign: sign.track_id)
    return [
        [
            [
                Shown(sign.box, relabel(v, k, sign), sign.class_id, sign.class_id)
                for sign in frame.instances
                if not sign.ignore
            ]
            for k, frame in enumerate(frames)
        ]
        for v, frames in enumerate(videos)
    ]


def test_the_truth_scores_perfectly(drives):
    videos = videos_of(read_coco_frames(drives))
    assert len(videos) == 3 and all(len(frames) == 10 for frames in videos)
    result = score(videos, _truth_answers(videos))
    assert result["mota"] == 1.0 and result["idf1"] == 1.0
    assert result["id_switches"] == 0 and result["false_positives"] == 0
    assert result["misses"] == 0 and result["false_tracks_per_video"] == 0
    assert result["mostly_tracked"] == result["true_tracks"] > 0
    assert result["class_accuracy"] == {"detection": 1.0, "track": 1.0, "signs": result["signs"]}
    by_source = result["class_accuracy_by_source"]
    assert set(by_source) == {"synthetic"}  # the only source without real data
    assert by_source["synthetic"]["signs"] == result["signs"]


def test_a_swapped_id_a_false_track_a_miss_and_a_wrong_class_are_counted(drives):
    videos = videos_of(read_coco_frames(drives))
    # From frame 5 on, every sign of the first video gets a new id: one switch per sign
    # seen on both sides of the cut.
    answers = _truth_answers(
        videos, lambda v, k, s: s.track_id + (1000 if v == 0 and k >= 5 else 0)
    )
    before = {s.track_id for f in videos[0][:5] for s in f.instances if not s.ignore}
    after = {s.track_id for f in videos[0][5:] for s in f.instances if not s.ignore}
    # A box far from every sign in one frame of the second video: one false track.
    answers[1][3].append(Shown((0, 0, 3, 3), 999, None, None))
    # The first sign of the third video's first frame is missed.
    missed = answers[2][0].pop(0)
    # And one answer reads the wrong class, its track the right one.
    wrong = answers[2][1][0]
    answers[2][1][0] = Shown(
        wrong.box, wrong.track_id, 57 if wrong.class_id != 57 else 56, wrong.class_id
    )
    result = score(videos, answers)
    assert result["id_switches"] == len(before & after) > 0
    assert result["idf1"] < 1.0
    assert result["false_positives"] == 1 and result["false_tracks_per_video"] == round(1 / 3, 4)
    assert result["misses"] == 1 and missed.track_id
    assert result["class_accuracy"]["track"] == 1.0
    signs = result["class_accuracy"]["signs"]
    assert result["class_accuracy"]["detection"] == round(1 - 1 / signs, 4)


def test_an_answer_on_an_ignored_sign_neither_counts_nor_penalises(drives):
    videos = videos_of(read_coco_frames(drives))
    answers = _truth_answers(videos)
    added = 0
    for v, frames in enumerate(videos):
        for k, frame in enumerate(frames):
            for sign in frame.instances:
                if sign.ignore:
                    answers[v][k].append(Shown(sign.box, 5000 + sign.track_id, None, None))
                    added += 1
    assert added > 0, "the drives should hold signs cut by the frame's edge"
    assert score(videos, answers)["false_positives"] == 0


def test_the_tracker_keeps_one_id_per_sign_through_drives(drives):
    """The real tracker, fed every counted sign (boxes as a detector would give them):
    no identity switch, every sign followed."""
    # Found from the picture alone, as a detector finds them (it is also run once to warm up).
    by_picture = {read_rgb(frame.image_path).tobytes(): frame for frame in read_coco_frames(drives)}
    assert len(by_picture) == 30

    def detect(rgb):
        frame = by_picture[rgb.tobytes()]
        return [Found(sign.box, sign.class_id) for sign in frame.instances if not sign.ignore]

    result = evaluate_tracking_folder(drives, detect, Tracker)
    assert result["id_switches"] == 0 and result["mota"] == 1.0 and result["idf1"] == 1.0
    assert result["frames"] == 30 and result["frames_per_s"] > 0


def test_frames_without_video_fields_are_refused(tmp_path):
    write_scenes(tmp_path, frames=2, seed=1, config=SMALL, sources=SceneSources())
    with pytest.raises(DataError, match="not frames of a video"):
        videos_of(read_coco_frames(tmp_path))


def test_a_sign_without_a_track_is_refused(drives, tmp_path):
    document = json.loads((drives / "annotations.json").read_text())
    del document["annotations"][0]["track_id"]
    copy = tmp_path / "annotations.json"
    copy.write_text(json.dumps(document))
    frames = read_coco_frames(copy, check_images=False)
    with pytest.raises(DataError, match="without a track_id"):
        videos_of(frames)


def test_two_signs_sharing_a_track_in_a_frame_are_refused_before_any_detection(drives, tmp_path):
    # motmetrics raised a KeyError on the pair, and only once every frame had been searched.
    document = json.loads((drives / "annotations.json").read_text())
    first = document["annotations"][0]
    twin = next(
        other
        for other in document["annotations"][1:]
        if other["image_id"] == first["image_id"] and other["track_id"] != first["track_id"]
    )
    twin["track_id"] = first["track_id"]
    (tmp_path / "annotations.json").write_text(json.dumps(document))
    (tmp_path / "images").symlink_to(drives / "images")

    def detect(rgb):
        raise AssertionError("detection ran on data that cannot be scored")

    with pytest.raises(DataError, match=f"more than one sign has track_id {first['track_id']}"):
        evaluate_tracking_folder(tmp_path, detect)
