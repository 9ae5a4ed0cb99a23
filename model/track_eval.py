"""How well signs are followed through annotated videos: CLEAR-MOT and identity scores.

The videos are the frames of a COCO set with TAO's fields (`video_id`, `frame_index`, and a
`track_id` per sign: `greedysign data drives` writes them). Each video's frames are searched
in order and their detections fed to a fresh tracker, as `greedysign detect VIDEO` and the
service do; then `motmetrics` compares its tracks with the true ones. In each frame a
detection and a sign pair at IoU 0.5 or more (1 - IoU is the distance; motmetrics keeps a
pair while it holds, which is how it counts identity switches). A sign marked `ignore` (too
small, or mostly out of the frame) neither counts nor penalises: a detection that matches no
counted sign but lies on an ignored one (half of its area or more) is left out, as
COCO treats crowd regions and MOT17 its distractors.

Reported per set (all videos pooled): MOTA, IDF1, identity switches, fragmentations, true
tracks mostly tracked (80 % of their frames or more) and mostly lost (under 20 %),
precision and recall of the frames' signs, false tracks (tracker tracks that never match a
sign) per video, and the class shown for the matched signs: the detection's own reading, and
the track's vote as it stood in that frame (what the CLI and the service answer), each
against the sign's CTSRD class ("unknown sign" for a sign of none), over all matched signs
and by where generated signs came from (the annotation's `source`: real crops of TT100K and
TSRD, or synthetic drawings, whose pictograms are cruder than real signs').
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.frames import FrameRecord, read_coco_frames
from data.images import read_rgb
from data.records import DataError, box_area, box_overlap
from model.detect import Detection
from model.detect_eval import rounded
from model.track import Tracker, iou_matrix

IOU = 0.5
METRICS = (
    "mota",
    "idf1",
    "num_switches",
    "num_fragmentations",
    "mostly_tracked",
    "mostly_lost",
    "num_unique_objects",
    "precision",
    "recall",
    "num_false_positives",
    "num_misses",
    "num_objects",
)


@dataclass(frozen=True)
class Shown:
    """One detection as a user sees it: its box, its own class and its track's."""

    box: tuple[int, int, int, int]
    track_id: int
    class_id: int | None  # the detection's own reading
    track_class_id: int | None  # the track's vote in this frame


def videos_of(frames: Sequence[FrameRecord]) -> list[list[FrameRecord]]:
    """The frames grouped by video (in order of first appearance), each in frame order; a
    frame that is no video's, or whose signs lack a track or share one, is a DataError."""
    grouped: dict[int, list[FrameRecord]] = {}
    for frame in frames:
        if frame.video_id is None or frame.frame_index is None:
            raise DataError(
                Path(frame.source.split(":")[0]),
                None,
                f"{frame.image_path.name}: no video_id/frame_index: not frames of a video "
                "(greedysign data drives writes them)",
            )
        if any(sign.track_id is None for sign in frame.instances):
            raise DataError(
                Path(frame.source.split(":")[0]),
                None,
                f"{frame.image_path.name}: a sign without a track_id: tracks cannot be scored",
            )
        tracks = Counter(sign.track_id for sign in frame.instances)
        shared = sorted(track for track, signs in tracks.items() if signs > 1)
        if shared:
            # motmetrics keys a frame's signs by track: it failed on the pair only once every
            # frame had been searched.
            raise DataError(
                Path(frame.source.split(":")[0]),
                None,
                f"{frame.image_path.name} (frame {frame.frame_index} of video {frame.video_id}): "
                f"more than one sign has track_id {shared[0]}, and a track is one sign",
            )
        grouped.setdefault(frame.video_id, []).append(frame)
    return [sorted(video, key=lambda frame: frame.frame_index) for video in grouped.values()]


def follow(
    detections: Sequence[Sequence[Detection]], tracker: Tracker, first_hit: int = 1
) -> list[list[Shown]]:
    """One video's detections, frame by frame, through `tracker`; a detection is shown once
    its track has been matched in `first_hit` frames (1: always, as the CLI and service do)."""
    shown = []
    for found in detections:
        tracks = tracker.update(found)
        shown.append(
            [
                Shown(detection.box, track.track_id, detection.class_id, track.label[1])
                for detection, track in zip(found, tracks, strict=True)
                if track.hits >= first_hit
            ]
        )
    return shown


def score(
    videos: Sequence[Sequence[FrameRecord]], shown: Sequence[Sequence[Sequence[Shown]]]
) -> dict:
    """The numbers of the module docstring for tracked videos (`shown[v][k]`: what the
    tracker answered in frame k of video v)."""
    import motmetrics

    accumulators, false_tracks = [], 0
    # source family ("" for all) -> [detection right, track right, signs]
    labels: dict[str, list[int]] = {"": [0, 0, 0]}
    for frames, answers in zip(videos, shown, strict=True):
        accumulator = motmetrics.MOTAccumulator(auto_id=True)
        kept_tracks = set()
        seen = []  # per frame: ({sign track id: sign}, {tracker track id: Shown}) as scored
        for frame, answer in zip(frames, answers, strict=True):
            counted = [sign for sign in frame.instances if not sign.ignore]
            ignored = [sign for sign in frame.instances if sign.ignore]
            truth = np.array([sign.scored_box for sign in counted], np.float64).reshape(-1, 4)
            boxes = np.array([one.box for one in answer], np.float64).reshape(-1, 4)
            overlap = iou_matrix(truth, boxes)
            kept = [
                d
                for d, one in enumerate(answer)
                if (overlap[:, d] >= IOU).any() or not _on_ignored(one.box, ignored)
            ]
            distance = np.where(overlap[:, kept] >= IOU, 1 - overlap[:, kept], np.nan)
            accumulator.update(
                [sign.track_id for sign in counted], [answer[d].track_id for d in kept], distance
            )
            kept_tracks.update(answer[d].track_id for d in kept)
            seen.append(
                (
                    {sign.track_id: sign for sign in counted},
                    {answer[d].track_id: answer[d] for d in kept},
                )
            )
        events = accumulator.mot_events
        paired = events[events["Type"].isin(("MATCH", "SWITCH"))]
        for (frame_id, _), sign_id, track_id in zip(
            paired.index, paired["OId"], paired["HId"], strict=True
        ):
            signs, tracks = seen[frame_id]
            sign, answer = signs[int(sign_id)], tracks[int(track_id)]
            family = sign.source.split(":")[0]
            for key in {"", family}:
                counts = labels.setdefault(key, [0, 0, 0])
                counts[0] += answer.class_id == sign.class_id
                counts[1] += answer.track_class_id == sign.class_id
                counts[2] += 1
        accumulators.append(accumulator)
        false_tracks += len(kept_tracks - {int(track) for track in paired["HId"]})

    summary = motmetrics.metrics.create().compute_many(
        accumulators,
        metrics=list(METRICS),
        names=[str(number) for number in range(len(accumulators))],
        generate_overall=True,
    )
    overall = summary.loc["OVERALL"]
    return {
        "videos": len(videos),
        "frames": sum(len(frames) for frames in videos),
        "signs": int(overall["num_objects"]),
        "true_tracks": int(overall["num_unique_objects"]),
        "iou": IOU,
        "mota": rounded(overall["mota"]),
        "idf1": rounded(overall["idf1"]),
        "id_switches": int(overall["num_switches"]),
        "fragmentations": int(overall["num_fragmentations"]),
        "mostly_tracked": int(overall["mostly_tracked"]),
        "mostly_lost": int(overall["mostly_lost"]),
        "precision": rounded(overall["precision"]),
        "recall": rounded(overall["recall"]),
        "false_positives": int(overall["num_false_positives"]),
        "misses": int(overall["num_misses"]),
        "false_tracks_per_video": rounded(false_tracks / len(videos) if videos else None),
        "class_accuracy": _accuracy(*labels.pop("")),
        "class_accuracy_by_source": {
            family: _accuracy(*counts) for family, counts in sorted(labels.items())
        },
    }


def evaluate_tracking_folder(
    root: Path | str,
    detect: Callable[[np.ndarray], list[Detection]],
    make_tracker: Callable[[], Tracker] = Tracker,
    limit: int | None = None,
) -> dict:
    """`score` for the videos of a COCO frames folder (the first `limit` of them), and the
    frames/s of detection and tracking together (reading the images and a first, warm-up
    detection are not counted)."""
    videos = videos_of(read_coco_frames(root))[:limit]
    if not videos:  # scores of nothing would print as nulls and exit as a success
        raise DataError(root, None, "no frames to score")
    shown, seconds, warm = [], 0.0, False
    for frames in videos:
        tracker = make_tracker()
        answers = []
        for frame in frames:
            rgb = read_rgb(frame.image_path)
            if not warm:
                detect(rgb)  # untimed: a first pass pays for one-off set-up (detect_eval too)
                warm = True
            started = time.perf_counter()
            answers.extend(follow([detect(rgb)], tracker))
            seconds += time.perf_counter() - started
        shown.append(answers)
    result = score(videos, shown)
    result["seconds"] = round(seconds, 2)
    result["frames_per_s"] = rounded(result["frames"] / seconds if seconds > 0 else None)
    return result


def _on_ignored(box: Sequence[int], ignored: Sequence) -> bool:
    """Half of the detection's area or more on one ignored sign."""
    area = box_area(box)
    return bool(area) and any(box_overlap(box, sign.scored_box) >= 0.5 * area for sign in ignored)


def _accuracy(detection_right: int, track_right: int, signs: int) -> dict:
    return {
        "detection": rounded(detection_right / signs if signs else None),
        "track": rounded(track_right / signs if signs else None),
        "signs": signs,
    }
