"""Hard negatives for the sign model: what the scene model marks on frames that hold no sign.

In scene mode every region the scene model marks is cut from the frame and read by the sign
model, which drops the regions it reads as "no sign". A sign model that learned "no sign" from
TT100K's 600 background patches alone reads car tail lights, traffic lights and red shirts as
"unknown sign" and keeps them (on the DFG frames: 10 false signs per frame). Here the scene
model is run over frames known to hold no sign, and every region it marks (among a frame's
MAX_REGIONS_PER_FRAME best-scoring ones) is cut out the way detection cuts it and written as
a "no sign" crop, in the crops layout that data/tt100k.py reads (`OUT/negative/<frame>_<n>.png`
beside `OUT/classes.csv`): train the sign model with `--data OUT` added, and scene mode learns
to refuse what it used to keep.

Frames come from a video past its first seconds (the dashcam clip shows warning signs only
in its first 5 s), optionally every `step`-th frame, or from a COCO frames folder that marks
every sign (DFG): there a region is a negative when it overlaps no marked sign, `ignore`
included. File names carry the frame number, which the split reads as the shot order:
neighbouring frames' crops stay on one side.

The same frames teach the other half too (`write_marked_signs`): every sign they mark, cut
the way detection cuts a region that finds it, as a sign crop. A reader taught only what to
refuse there refuses real signs it never saw as well: on the 25 DFG training frames the
sign model shipped before answered "no sign" to 16 of the 50 signs the scene model found
(delineator posts, direction boards; BENCHMARKS.md section 6).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from data.classes import sign_classes
from data.frames import FrameRecord, read_coco_frames
from data.images import read_rgb, upright_video_frame
from data.records import Box, DataError, box_overlap
from model.detect import Detector
from model.reading import cut, grown

# (frame number, RGB, boxes of the signs in it): a region that overlaps a sign is no negative.
Frames = Iterator[tuple[int, np.ndarray, list[Box]]]

DATASET = "ctsrd"  # the label space of the crops written
NEGATIVE_CODE = "negative"
SIGN_CODE = "sign"  # a marked sign without a CTSRD class: "unknown sign" to the crops reader
CLASS_CODE = "ctsrd-{}"  # a marked sign whose annotation gives CTSRD class {}
# A region that finds a sign is rarely its exact box: each sign is cut at a tight, a middle
# and a loose margin, as the reader will see it (the detection reads at 0.1 since the
# shipped reader learned these three; they stay, so that its recipe still gives its data).
SIGN_MARGINS = (0.05, 0.15, 0.3)
MIN_SIGN_SIDE = 12  # px, the longer box side: smaller marked signs are too blurred to teach
MAX_REGIONS_PER_FRAME = 20  # the best-scoring regions of a frame that `mine` considers


def video_frames(path: Path, skip_seconds: float, step: int) -> Frames:
    """Every `step`-th frame from `skip_seconds` on, as holding no sign. A file that is no
    video is a DataError here, before any frame is asked for; one that breaks off later is
    a DataError when its frames are read."""
    _open_video(path).close()
    return _sampled_frames(path, skip_seconds, step)


def _sampled_frames(path: Path, skip_seconds: float, step: int) -> Frames:
    number = -1
    with _open_video(path) as container:
        try:
            for number, frame in enumerate(container.decode(container.streams.video[0])):
                if frame.time is not None and frame.time < skip_seconds:
                    continue
                if number % step == 0:
                    yield number, upright_video_frame(frame), []
        except av.FFmpegError as error:
            where = f"after frame {number}" if number >= 0 else "before its first frame"
            fault = f"the video is truncated or corrupt {where} ({error.strerror or error})"
            raise DataError(path, None, fault) from None


def _open_video(path: Path) -> av.container.InputContainer:
    """The opened video, or a DataError saying why it cannot be read as one."""
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        fault = f"not a video FFmpeg can read ({error.strerror or error})"
        raise DataError(path, None, fault) from None
    if not container.streams.video:
        container.close()
        raise DataError(path, None, "the file holds no video stream")
    return container


def annotated_frames(root: Path, step: int, backgrounds: Collection[str] | None = None) -> Frames:
    """Every `step`-th frame of a COCO frames folder, with its marked signs; the number is
    the image's file name when it is one (DFG's are), else its place in the folder. With
    `backgrounds`, only the generated frames drawn on one of those kinds ("video",
    "negatives", "dfg"): a painted-out DFG frame still holds signs that DFG does not mark
    (far signs, the backs of signs), which would be mined as "no sign". The annotations
    are read here: a folder that is no COCO frames folder is a DataError before any frame
    is asked for (an image that does not decode, one when its frame is read)."""
    return _annotated_frames(read_coco_frames(root), step, backgrounds)


def _annotated_frames(
    frames: list[FrameRecord], step: int, backgrounds: Collection[str] | None
) -> Frames:
    for place, frame in enumerate(frames):
        if backgrounds is not None and frame.background.split(":")[0] not in backgrounds:
            continue
        if place % step == 0:
            number = _frame_number(frame.image_path, place)
            yield number, read_rgb(frame.image_path), [sign.box for sign in frame.instances]


def mine(detector: Detector, frames: Frames, out: Path) -> tuple[int, int]:
    """Of each frame's MAX_REGIONS_PER_FRAME best-scoring marked regions, write those that
    overlap none of its signs as "no sign" crops; (frames, crops)."""
    folder = out / NEGATIVE_CODE
    folder.mkdir(parents=True, exist_ok=True)
    seen = written = 0
    for number, rgb, signs in frames:
        seen += 1
        height, width = rgb.shape[:2]
        instances = detector.instances(rgb)[:MAX_REGIONS_PER_FRAME]  # best scores first
        for index, instance in enumerate(instances):
            if any(box_overlap(instance.box, sign) > 0 for sign in signs):
                continue
            window = grown(instance.box, height, width, detector.config.margin)
            crop = cv2.cvtColor(cut(rgb, window), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / f"{number:06d}_{index}.png"), crop)
            written += 1
    write_class_table(out)
    return seen, written


def write_marked_signs(root: Path, out: Path, margins: tuple[float, ...] = SIGN_MARGINS) -> int:
    """Write every sign the COCO frames folder `root` marks (not `ignore`, longer side at
    least MIN_SIGN_SIDE px) cut at each of `margins`, as `OUT/sign/<frame>_<sign>_<m>.png`
    ("unknown sign": DFG's European signs are outside the 58 classes) or in `OUT/ctsrd-<id>/`
    when the annotation gives a CTSRD class. Returns the crops written. A class outside
    CTSRD's is a DataError before anything is written: the crops reader refuses it."""
    frames = read_coco_frames(root)
    _check_sign_classes(frames)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for place, frame in enumerate(frames):
        number = _frame_number(frame.image_path, place)
        rgb = None
        for index, sign in enumerate(frame.instances):
            x1, y1, x2, y2 = sign.box
            if sign.ignore or max(x2 - x1, y2 - y1) < MIN_SIGN_SIDE:
                continue
            rgb = read_rgb(frame.image_path) if rgb is None else rgb
            code = SIGN_CODE if sign.class_id is None else CLASS_CODE.format(sign.class_id)
            folder = out / code
            folder.mkdir(parents=True, exist_ok=True)
            for step, margin in enumerate(margins):
                window = grown(sign.box, frame.height, frame.width, margin)
                crop = cv2.cvtColor(cut(rgb, window), cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(folder / f"{number:06d}_{index}_{step}.png"), crop)
                written += 1
    write_class_table(out)
    return written


def _check_sign_classes(frames: list[FrameRecord]) -> None:
    """Every `ctsrd_class` given must be a CTSRD class (the COCO reader takes any id >= 0)."""
    classes = len(sign_classes(DATASET))
    for frame in frames:
        for sign in frame.instances:
            if sign.class_id is not None and sign.class_id >= classes:
                raise DataError(
                    frame.source,
                    None,
                    f"annotation {sign.annotation_id}: ctsrd_class {sign.class_id} is not a "
                    f"CTSRD class (0-{classes - 1})",
                )


def write_class_table(out: Path) -> None:
    """`OUT/classes.csv` for the code folders in OUT, as the crops reader (data/tt100k.py)
    wants it."""
    rows = ["code,name,ctsrd_class_id"]
    for folder in sorted(path for path in out.iterdir() if path.is_dir()):
        code = folder.name
        if code == NEGATIVE_CODE:
            rows.append(f"{code},Not a sign (mined from sign-free frames),")
        elif code == SIGN_CODE:
            rows.append(f"{code},A marked sign outside the 58 classes,")
        elif code.startswith(CLASS_CODE.format("")):
            class_id = code.removeprefix(CLASS_CODE.format(""))
            rows.append(f"{code},A marked sign of CTSRD class {class_id},{class_id}")
    (out / "classes.csv").write_text("\n".join(rows) + "\n")


def _frame_number(image_path: Path, place: int) -> int:
    """The image's file name when it is a number (DFG's are), else its place in the folder."""
    return int(image_path.stem) if image_path.stem.isdigit() else place
