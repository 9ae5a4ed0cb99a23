"""Hard negatives for the sign model: what the scene model marks on frames that hold no sign.

In scene mode every region the scene model marks is cut from the frame and read by the sign
model, which drops the regions it reads as "no sign". A sign model that learned "no sign" from
TT100K's 600 background patches alone reads car tail lights, traffic lights and red shirts as
"unknown sign" and keeps them (on the DFG frames: 10 false signs per frame). Here the scene
model is run over frames known to hold no sign, and every region it marks is cut out the way
detection cuts it and written as a "no sign" crop, in the crops layout that data/tt100k.py
reads (`OUT/negative/<frame>_<n>.png` beside `OUT/classes.csv`): train the sign model with
`--data OUT` added, and scene mode learns to refuse what it used to keep.

Frames come from a video past its first seconds (the dashcam clip shows warning signs only
in its first 5 s), optionally every `step`-th frame. File names carry the frame number, which
the split reads as the shot order: neighbouring frames' crops stay on one side.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from model.detect import Detector
from model.reading import grown

CLASSES_CSV = "code,name,ctsrd_class_id\nnegative,Not a sign (mined from sign-free frames),\n"


def video_frames(path: Path, skip_seconds: float, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, RGB) of every `step`-th frame from `skip_seconds` on."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for number, frame in enumerate(container.decode(stream)):
            if frame.time is not None and frame.time < skip_seconds:
                continue
            if number % step == 0:
                yield number, frame.to_ndarray(format="rgb24")


def mine(
    detector: Detector,
    frames: Iterator[tuple[int, np.ndarray]],
    out: Path,
    max_per_frame: int = 20,
) -> tuple[int, int]:
    """Write every region marked on sign-free frames as a "no sign" crop; (frames, crops)."""
    folder = out / "negative"
    folder.mkdir(parents=True, exist_ok=True)
    (out / "classes.csv").write_text(CLASSES_CSV)
    seen = written = 0
    for number, rgb in frames:
        seen += 1
        height, width = rgb.shape[:2]
        instances = sorted(detector.instances(rgb), key=lambda i: -i.score)[:max_per_frame]
        for index, instance in enumerate(instances):
            x1, y1, x2, y2 = grown(instance.box, height, width, detector.config.margin)
            crop = cv2.cvtColor(rgb[y1:y2, x1:x2], cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(folder / f"{number:06d}_{index}.png"), crop)
            written += 1
    return seen, written
