"""`greedysign detect` (JSON lines per image, tracked frames and an annotated video) and
`greedysign eval-detect` (its JSON), run in-process through app.cli.main, with tiny models:
a scene model that marks every pixel makes each frame one sign whose box is the frame."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, features

from app.cli import main
from model.device import cpu_has_amx


def models(scene: Path, crops: Path) -> list[str]:
    return ["--scene-model", str(scene), "--model", str(crops), "--device", "cpu"]


def lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_clip(
    path: Path, frames: int = 5, size: tuple[int, int] = (96, 64), container: str = "mp4"
) -> Path:
    width, height = size
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = np.full((height, width, 3), 60 + 20 * index, np.uint8)
            image[20:40, 10 + 5 * index : 30 + 5 * index] = (230, 30, 30)
            output.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        output.mux(stream.encode())
    return path


def write_timed_clip(path: Path, seconds: list[float], size: tuple[int, int] = (64, 48)) -> Path:
    """An mp4 whose frames are shown at `seconds` (explicit timestamps, gaps allowed)."""
    width, height = size
    with av.open(str(path), "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for second in seconds:
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 90, np.uint8))
            frame.pts, frame.time_base = round(second * 1000), Fraction(1, 1000)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


def write_small_scenes(folder: Path, frames: int, min_size: int) -> Path:
    """Generated 160x96 scenes of one or more synthetic signs, as a COCO frames folder."""
    from data.scenes import SceneConfig, SceneSources, write_scenes

    config = SceneConfig(width=160, height=96, min_size=min_size, max_size=40, signs=(1, 3))
    write_scenes(folder, frames=frames, seed=1, config=config, sources=SceneSources())
    return folder


def test_json_lines_per_image_in_original_pixels(
    whole_frame_scene_model_path, one_class_model_path, tmp_path, capsys
) -> None:
    images = [write_image(tmp_path / "a.png", 320, 180), write_image(tmp_path / "b.jpg", 50, 90)]
    argv = ["detect", *map(str, images), "--json", "--long-side", "64"]
    assert main(argv + models(whole_frame_scene_model_path, one_class_model_path)) == 0
    first, second = lines(capsys)
    assert first["image"] == str(images[0]) and second["image"] == str(images[1])
    for line, (width, height) in ((first, (320, 180)), (second, (50, 90))):
        [sign] = line["signs"]  # each frame is one sign, read as class 3
        assert sign["box"] == [0, 0, width, height]
        assert set(sign) >= {"box", "class_id", "class_name", "score"}
        assert sign["class_id"] == 3 and sign["score"] > 0.99


def test_no_sign_anywhere_is_an_empty_list_and_bad_files_are_named(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    image = write_image(tmp_path / "a.png", 64, 64)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["detect", str(image), str(broken), "--json", "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 1
    good, bad = lines(capsys)
    assert good == {"image": str(image), "signs": []}
    assert bad["image"] == str(broken) and "broken.png" in bad["error"]


def test_without_json_one_readable_line_per_image(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    image = write_image(tmp_path / "a.png", 64, 64)
    argv = ["detect", str(image), "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    assert capsys.readouterr().out == f"{image}: 0 signs\n"
    # What cannot be read is said on stderr, in words, as the other lines are.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["detect", str(broken), str(image), "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 1
    printed = capsys.readouterr()
    assert printed.out == f"{image}: 0 signs\n"
    assert printed.err.startswith(f"error: {broken}: ") and "{" not in printed.err
    assert printed.err.count(str(broken)) == 1


def test_a_crop_model_given_as_the_scene_model_is_refused(tiny_model_path, tmp_path, capsys):
    image = write_image(tmp_path / "a.png", 64, 64)
    assert main(["detect", str(image)] + models(tiny_model_path, tiny_model_path)) == 2
    assert "not a scene model" in capsys.readouterr().err


def test_a_video_is_tracked_and_written_annotated(
    whole_frame_scene_model_path, one_class_model_path, tmp_path, capsys
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=5)
    out = tmp_path / "annotated" / "clip.mp4"
    argv = ["detect", str(clip), "--out", str(out), "--json", "--long-side", "64"]
    assert main(argv + models(whole_frame_scene_model_path, one_class_model_path)) == 0
    output = lines(capsys)
    frames, summary = output[:-1], output[-1]["summary"]
    assert [f["frame_index"] for f in frames] == list(range(5))
    signs = [sign for frame in frames for sign in frame["signs"]]
    assert [sign["track_id"] for sign in signs] == [1] * 5
    assert summary["frames"] == 5 and summary["out"] == str(out)
    with av.open(str(out)) as written:
        decoded = [f.to_ndarray(format="rgb24") for f in written.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (64, 96, 3)
    source = np.full((64, 96, 3), 60, np.uint8)
    # The overlay changed the picture: the box is drawn along the frame's edge, the mask
    # tints every pixel.
    assert np.abs(decoded[0].astype(int) - source).mean() > 10


def test_video_frames_can_be_sampled(empty_scene_model_path, tiny_model_path, tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=10)
    argv = ["detect", str(clip), "--json", "--fps", "5", "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    frames = lines(capsys)[:-1]
    assert [f["frame_index"] for f in frames] == [0, 2, 4, 6, 8]


def test_sampling_catches_up_after_a_timestamp_gap(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    seconds = [i / 10 for i in range(11)] + [5 + i / 10 for i in range(11)]  # 0-1 s, 5-6 s
    clip = write_timed_clip(tmp_path / "gap.mp4", seconds)
    argv = ["detect", str(clip), "--json", "--fps", "1", "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    frames = lines(capsys)[:-1]
    # One frame a second on each side of the gap, not every 1/fps after it (5.1, 5.2, ...).
    assert [f["pts_s"] for f in frames] == pytest.approx([0.0, 1.0, 5.0, 6.0])


@pytest.mark.parametrize(("fps", "written_fps", "written_frames"), [(5, 5, 5), (30, 10, 10)])
def test_the_annotated_copy_plays_at_the_sampled_rate(
    empty_scene_model_path, tiny_model_path, tmp_path, fps, written_fps, written_frames
) -> None:
    # --fps above the video's own rate keeps every frame, at the video's rate, not faster.
    clip = write_clip(tmp_path / "clip.mp4", frames=10)  # 10 frames/s
    out = tmp_path / "out.mp4"
    argv = ["detect", str(clip), "--fps", str(fps), "--out", str(out), "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    with av.open(str(out)) as written:
        assert written.streams.video[0].average_rate == written_fps
        assert sum(1 for _ in written.decode(video=0)) == written_frames


@pytest.mark.parametrize("fps", ["0", "-1", "nan", "inf", "fast"])
def test_fps_must_be_a_positive_number(tmp_path, capsys, fps) -> None:
    # 0 was taken as "every frame" and a negative rate reached the video writer.
    with pytest.raises(SystemExit) as exited:
        main(["detect", str(tmp_path / "clip.mp4"), "--fps", fps])
    assert exited.value.code == 2
    assert "--fps" in capsys.readouterr().err


@pytest.mark.skipif(not features.check("avif"), reason="Pillow without its AVIF plugin")
def test_an_avif_photo_is_an_image_not_a_video(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    # An AVIF file is ISO base media (ftyp) like an mp4, and FFmpeg opens it as a video.
    photo = tmp_path / "photo.avif"
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(photo)
    argv = ["detect", str(photo), "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    assert capsys.readouterr().out == f"{photo}: 0 signs\n"


def test_a_file_without_a_video_stream_is_an_error_line(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    audio = tmp_path / "silence.m4a"
    with av.open(str(audio), "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=44100)
        for index in range(44):  # a second of silence
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 44100, index * 1024
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    argv = ["detect", str(audio), "--json"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 1
    assert lines(capsys) == [
        {"video": str(audio), "error": "the file has no video stream (is it cut short?)"}
    ]


def test_out_needs_exactly_one_video(empty_scene_model_path, tiny_model_path, tmp_path, capsys):
    image = write_image(tmp_path / "a.png", 64, 64)
    argv = ["detect", str(image), "--out", str(tmp_path / "x.mp4")]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 2
    assert "one video" in capsys.readouterr().err


def test_out_that_is_the_input_a_folder_or_no_mp4_is_refused_before_the_model_loads(
    tmp_path, capsys
) -> None:
    # The input was overwritten while it was read; a folder failed once the whole video had
    # been processed; out.avi got an mp4 inside.
    clip = write_clip(tmp_path / "clip.mp4")
    original = clip.read_bytes()
    (tmp_path / "link.mp4").symlink_to(clip)
    os.link(clip, tmp_path / "hard.mp4")
    (tmp_path / "folder.mp4").mkdir()
    refused = {
        clip: "is the video being read",
        tmp_path / "sub" / ".." / "clip.mp4": "is the video being read",
        tmp_path / "link.mp4": "is the video being read",
        tmp_path / "hard.mp4": "is the video being read",
        tmp_path / "folder.mp4": "is a folder",
        tmp_path / "out.avi": "ending in .mp4",
        tmp_path / "out": "ending in .mp4",
    }
    (tmp_path / "sub").mkdir()
    for out, fault in refused.items():
        # A scene model that is not there: the refusal must come before it is looked for.
        argv = ["detect", str(clip), "--out", str(out), "--scene-model", str(tmp_path / "no.pt")]
        assert main(argv) == 2
        assert fault in capsys.readouterr().err, out
    assert clip.read_bytes() == original
    assert not (tmp_path / "out.avi").exists()


def test_a_failing_close_of_out_is_reported_and_hides_no_earlier_error(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys, monkeypatch
) -> None:
    from data.video_writer import VideoWriter

    def write_fails(self, rgb):
        raise OSError(28, "No space left on device")

    def close_fails(self):
        raise OSError(5, "Input/output error")

    clip = write_clip(tmp_path / "clip.mp4")
    argv = ["detect", str(clip), "--out", str(tmp_path / "out.mp4"), "--long-side", "64"]
    argv += models(empty_scene_model_path, tiny_model_path)
    monkeypatch.setattr(VideoWriter, "close", close_fails)
    assert main(argv) == 1  # the close that flushes the copy: its failure is the error
    assert "Input/output error" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4"]  # no copy left
    monkeypatch.setattr(VideoWriter, "write", write_fails)
    assert main(argv) == 1  # closing after the write failed: the write's error is the one
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4"]
    # A folder that is a file: refused before the model loads, not a traceback at the end.
    blocked = ["detect", str(clip), "--out", str(tmp_path / "clip.mp4" / "out.mp4")]
    assert main(blocked + models(empty_scene_model_path, tiny_model_path)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_eval_detect_prints_the_scores(
    whole_frame_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    scenes = write_small_scenes(tmp_path / "scenes", frames=3, min_size=12)
    # The model marks each whole frame: one region, unless parted along a horizon.
    argv = ["eval-detect", "--data", str(scenes), "--long-side", "64", "--no-part-boards"]
    assert main(argv + models(whole_frame_scene_model_path, tiny_model_path)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 3 and result["class_agnostic"] is True
    assert result["config"]["part_boards"] is False
    assert result["config"]["max_upscale"] == 1.5
    assert result["config"]["margin"] == 0.1  # regions are read a little looser than boxed
    assert result["config"]["min_solidity"] == 0.75  # ragged regions are no sign's face
    assert set(result) >= {
        "precision",
        "recall",
        "f1",
        "recall_by_size",
        "mask_iou",
        "false_signs_per_frame",
        "frames_per_s",
        "at_32_px_and_more",
    }
    assert set(result["at_32_px_and_more"]) == {
        "precision",
        "recall",
        "false_signs_per_frame",
        "recall_interval",
        "false_signs_per_frame_interval",
    }
    assert set(result["recall_by_size"]) == {
        "small (<32)",
        "medium (32-96)",
        "large (>96)",
        "32 and more",
    }
    # One frame-filling detection per frame at most, matching no small sign.
    assert result["detections"] <= 3 and result["true_positives"] == 0
    assert result["config"]["long_side"] == 64
    assert result["mirror"] is False  # off on a CPU unless asked for
    # bfloat16 by default only where the CPU has AMX; --no-bf16 keeps float32 anywhere
    assert result["scene_dtype"] == ("bfloat16" if cpu_has_amx() else "float32")
    assert main(argv + ["--no-bf16"] + models(whole_frame_scene_model_path, tiny_model_path)) == 0
    assert json.loads(capsys.readouterr().out)["scene_dtype"] == "float32"
    assert main(argv + ["--mirror"] + models(whole_frame_scene_model_path, tiny_model_path)) == 0
    mirrored = json.loads(capsys.readouterr().out)
    assert mirrored["mirror"] is True and mirrored["detections"] == result["detections"]
    loose = argv + ["--read-margin", "0.3"] + models(whole_frame_scene_model_path, tiny_model_path)
    assert main(loose) == 0
    assert json.loads(capsys.readouterr().out)["config"]["margin"] == 0.3
    for margin in ("-1", "nan", "inf"):  # NaN reached int() in the crop's geometry
        assert main(argv + ["--read-margin", margin]) == 2
        assert "read margin must lie in [0, 1]" in capsys.readouterr().err
    for flags in (["--max-upscale", "nan"], ["--long-side", "100000"]):  # a gigapixel frame
        assert main(argv + flags) == 2
        assert "must lie in" in capsys.readouterr().err


def test_eval_detect_on_a_missing_folder_exits_2(empty_scene_model_path, tiny_model_path, capsys):
    argv = ["eval-detect", "--data", "/nonexistent/frames"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 2
    assert "no such frames folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval-detect", "eval-track"])
def test_a_folder_with_no_frame_to_score_is_an_error(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys, command
) -> None:
    # It printed null scores and exited 0.
    empty = tmp_path / "frames"
    (empty / "images").mkdir(parents=True)
    categories = [{"id": 1, "name": "sign"}]
    document = {"images": [], "annotations": [], "categories": categories}
    (empty / "annotations.json").write_text(json.dumps(document))
    argv = [command, "--data", str(empty)]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 2
    assert "no frames to score" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval-detect", "eval-track"])
def test_eval_limit_must_be_at_least_one(tmp_path, capsys, command) -> None:
    # 0 scored no frame and exited 0; -1 dropped the last frame (a slice's end).
    for value in ("0", "-1", "few"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--data", str(tmp_path), "--limit", value])
        assert exited.value.code == 2
        assert "--limit" in capsys.readouterr().err


def test_mine_negatives_with_signs_writes_the_marked_signs_too(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    from data.load import load_dataset

    scenes = write_small_scenes(tmp_path / "scenes", frames=2, min_size=16)
    out = tmp_path / "crops"
    argv = ["mine-negatives", str(scenes), "--out", str(out), "--signs"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    assert "0 'no sign' crops from 2 frames" in capsys.readouterr().out
    # Generated signs carry their CTSRD class, and the crops keep it.
    labels = {record.class_id for record in load_dataset(out).records}
    assert labels and all(0 <= label < 58 for label in labels)


def test_mine_negatives_refuses_signs_of_a_video(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    argv = ["mine-negatives", str(clip), "--out", str(tmp_path / "crops"), "--signs"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 2
    assert "COCO frames folder" in capsys.readouterr().err


def test_mine_negatives_cuts_no_sign_crops_only_on_the_backgrounds_asked(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    scenes = write_small_scenes(tmp_path / "scenes", frames=2, min_size=16)  # procedural
    out = tmp_path / "crops"
    argv = ["mine-negatives", str(scenes), "--out", str(out), "--signs"]
    argv += ["--no-sign-backgrounds", "video,negatives"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    printed = capsys.readouterr().out
    # No frame was drawn on those backgrounds; the signs of every frame are still written.
    assert "0 'no sign' crops from 0 frames" in printed
    written = int(printed.split(" sign crops of the signs marked")[0].split()[-1])
    assert written > 0 and written == len(list(out.glob("ctsrd-*/*.png")))


def test_mine_negatives_refuses_unknown_backgrounds_and_a_video(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    for source, kinds in ((tmp_path, "video,clouds"), (tmp_path, ","), (clip, "video")):
        argv = ["mine-negatives", str(source), "--out", str(tmp_path / "crops")]
        argv += ["--no-sign-backgrounds", kinds]
        assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 2
        assert "--no-sign-backgrounds takes a generated scenes folder" in capsys.readouterr().err


def test_mine_negatives_from_a_missing_source_is_an_error_that_writes_nothing(
    tmp_path, capsys
) -> None:
    out = tmp_path / "crops"
    assert main(["mine-negatives", str(tmp_path / "clip.mp4"), "--out", str(out)]) == 2
    assert "clip.mp4: no such video or frames folder" in capsys.readouterr().err
    assert not out.exists()


def _text(folder: Path) -> Path:
    folder.mkdir()
    (folder / "text.mp4").write_text("not a video\n")
    return folder / "text.mp4"


def _empty(folder: Path) -> Path:
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    return folder / "empty.mp4"


def _cut_short(folder: Path) -> Path:
    folder.mkdir()
    clip = write_clip(folder / "clip.mp4", frames=10)
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])  # its index is at the end
    return clip


def _audio_only(folder: Path) -> Path:
    folder.mkdir()
    with av.open(str(folder / "sound.m4a"), "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 44100, 0
        output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return folder / "sound.m4a"


def _coco_without_categories(folder: Path) -> Path:
    write_small_scenes(folder, frames=2, min_size=16)
    document = json.loads((folder / "annotations.json").read_text())
    del document["categories"]
    (folder / "annotations.json").write_text(json.dumps(document))
    return folder


def _coco_with_a_truncated_frame(folder: Path) -> Path:
    write_small_scenes(folder, frames=2, min_size=16)
    last = sorted((folder / "images").iterdir())[-1]  # the first frame is mined, then this
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return folder


def _sign_folder(folder: Path) -> Path:
    from data.synth import generate_synthetic

    generate_synthetic(folder, per_class=1, classes=[3])
    return folder


@pytest.mark.parametrize(
    ("make", "fault"),
    [
        (_text, "not a video FFmpeg can read"),
        (_empty, "not a video FFmpeg can read"),
        (_cut_short, "not a video FFmpeg can read"),
        (_audio_only, "holds no video stream"),
        (_coco_without_categories, "'categories' is missing"),
        (_coco_with_a_truncated_frame, "truncated"),
        (_sign_folder, "no annotations.json"),
    ],
    ids=["text", "empty", "cut short", "audio only", "no categories", "frame cut", "sign set"],
)
def test_mine_negatives_from_a_bad_source_is_an_error_that_leaves_nothing(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys, make, fault
) -> None:
    source = make(tmp_path / "source")
    for out in (tmp_path / "new" / "crops", tmp_path / "empty"):
        argv = ["mine-negatives", str(source), "--out", str(out), "--skip-seconds", "0"]
        assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and fault in error and "Traceback" not in error
        (tmp_path / "empty").mkdir(exist_ok=True)  # the second run: into an empty folder
    assert not (tmp_path / "new").exists()
    assert list((tmp_path / "empty").iterdir()) == []


def test_mine_negatives_refuses_a_folder_that_holds_anything(tmp_path, capsys) -> None:
    # A second source mined into the same folder overwrote the first one's crops.
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "crops"
    (out / "negative").mkdir(parents=True)
    (out / "negative" / "000012_0.png").write_bytes(b"a crop")
    for target in (out, clip):
        assert main(["mine-negatives", str(clip), "--out", str(target)]) == 2
        assert "not an empty folder" in capsys.readouterr().err
    assert (out / "negative" / "000012_0.png").read_bytes() == b"a crop"


def test_mine_negatives_refuses_a_sign_class_outside_ctsrd(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    # Its crops were written under a classes.csv that `greedysign data check` refuses.
    scenes = write_small_scenes(tmp_path / "scenes", frames=2, min_size=16)
    document = json.loads((scenes / "annotations.json").read_text())
    document["annotations"][-1]["ctsrd_class"] = 99
    (scenes / "annotations.json").write_text(json.dumps(document))
    out = tmp_path / "crops"
    argv = ["mine-negatives", str(scenes), "--out", str(out), "--signs"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 2
    assert "ctsrd_class 99 is not a CTSRD class (0-57)" in capsys.readouterr().err
    assert not out.exists()


def test_mine_negatives_refuses_a_step_below_one(tmp_path, capsys) -> None:
    # Step 0 divided by zero and a negative one picked frames by Python's modulo rules.
    for value in ("0", "-2", "every"):
        with pytest.raises(SystemExit) as exited:
            main(
                ["mine-negatives", str(tmp_path), "--out", str(tmp_path / "crops"), "--step", value]
            )
        assert exited.value.code == 2
        assert "--step" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_detect_reads_the_dfg_frames(
    dfg_frames, empty_scene_model_path, tiny_model_path, capsys
) -> None:
    argv = ["eval-detect", "--data", str(dfg_frames), "--limit", "3", "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 3 and result["signs"] > 0
    assert result["recall"] == 0.0 and result["detections"] == 0


def test_a_video_that_breaks_off_leaves_no_half_annotated_copy(
    whole_frame_scene_model_path, one_class_model_path, tmp_path, capsys
) -> None:
    # Matroska: cut short, its first frames still play (an mp4's index comes last).
    clip = write_clip(tmp_path / "clip.mkv", frames=10, container="matroska")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 2 // 3])
    out = tmp_path / "annotated" / "cut.mp4"
    argv = ["detect", str(cut), "--out", str(out), "--json", "--long-side", "64"]
    assert main(argv + models(whole_frame_scene_model_path, one_class_model_path)) == 1
    *frames, failure = lines(capsys)
    assert frames and "error" in failure  # frames were drawn before it broke off
    assert list(out.parent.iterdir()) == []  # neither the copy nor its partial file
    whole = ["detect", str(clip), "--out", str(out), "--long-side", "64"]
    assert main(whole + models(whole_frame_scene_model_path, one_class_model_path)) == 0
    assert [path.name for path in out.parent.iterdir()] == ["cut.mp4"]


def test_mine_negatives_refuses_a_negative_skip_and_a_source_with_no_frame_to_mine(
    whole_frame_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=5)  # half a second
    out = tmp_path / "crops"
    argv = ["mine-negatives", str(clip), "--out", str(out), "--long-side", "64"]
    for skip in ("-6", "nan"):  # both meant no skipping: frames with signs mined as none
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--skip-seconds", skip])
        assert exited.value.code == 2 and "--skip-seconds" in capsys.readouterr().err
    mined = main(
        [*argv, "--skip-seconds", "60", *models(whole_frame_scene_model_path, tiny_model_path)]
    )
    assert mined == 2
    assert "no frame to mine" in capsys.readouterr().err
    assert not out.exists()  # no empty crops folder that reads as a success


def test_a_folder_is_its_images_and_videos_by_name(
    empty_scene_model_path, tiny_model_path, tmp_path, capsys
) -> None:
    folder = tmp_path / "drive"
    folder.mkdir()
    write_image(folder / "b.jpg", 64, 64)
    write_clip(folder / "a-clip.mov", frames=2)  # a video whatever its suffix says
    write_image(folder / "c.png", 64, 48)
    (folder / "readme.txt").write_text("not a frame")
    argv = ["detect", str(folder), "--json", "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 0
    printed = lines(capsys)
    assert [line.get("image") or line.get("video") for line in printed if "summary" not in line][
        -2:
    ] == [str(folder / "b.jpg"), str(folder / "c.png")]
    assert {line["video"] for line in printed if "frame_index" in line} == {
        str(folder / "a-clip.mov")
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["detect", str(empty), "--long-side", "64"]
    assert main(argv + models(empty_scene_model_path, tiny_model_path)) == 1
    assert capsys.readouterr().err == f"error: {empty}: a folder with no image or video in it\n"
