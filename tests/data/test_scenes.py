"""Composited scenes: determinism, exact masks, sizes, COCO round trip, real sources, the CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from data.classes import sign_classes
from data.frames import instance_mask, mask_box, read_coco_frames, split_frames
from data.images import read_rgb
from data.records import DataError
from data.scenes import (
    CropSide,
    SceneConfig,
    SceneGenerator,
    SceneSources,
    _occlude,
    _Placed,
    sign_annotation,
    write_scenes,
)
from data.sign_cutouts import synthetic_cutout

# Small frames, few signs: synthetic signs on procedural backgrounds need no real data.
SMALL = SceneConfig(
    width=192,
    height=128,
    min_size=8,
    max_size=40,
    large_max_size=60,
    large_fraction=0.1,
    signs=(2, 5),
    occlusion_rate=0.4,
    stack_rate=0.3,
)
NO_REAL_DATA = SceneSources()
FRAMES = 6


@pytest.fixture(scope="module")
def generator() -> SceneGenerator:
    return SceneGenerator(NO_REAL_DATA, SMALL)


@pytest.fixture(scope="module")
def scenes(generator):
    return [generator.render(3, index) for index in range(FRAMES)]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    report = write_scenes(out, frames=FRAMES, seed=3, config=SMALL, sources=NO_REAL_DATA)
    assert report.frames == FRAMES and report.images_per_minute > 0
    return out


def test_same_seed_same_scene_in_any_order(generator, scenes):
    fresh = SceneGenerator(NO_REAL_DATA, SMALL)
    for index in reversed(range(FRAMES)):  # a new generator, the other way round
        again = fresh.render(3, index)
        assert np.array_equal(again.image, scenes[index].image)
        assert [s.box for s in again.signs] == [s.box for s in scenes[index].signs]
        for ours, theirs in zip(again.signs, scenes[index].signs, strict=True):
            assert np.array_equal(ours.mask, theirs.mask)
    assert not np.array_equal(generator.render(4, 0).image, scenes[0].image)


def test_written_files_are_identical_for_a_seed(written, tmp_path):
    write_scenes(tmp_path, frames=FRAMES, seed=3, config=SMALL, sources=NO_REAL_DATA)
    for path in sorted(written.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / path.relative_to(written)).read_bytes(), path


def test_masks_are_exact_and_boxes_are_their_bounds(scenes):
    for scene in scenes:
        assert scene.image.shape == (SMALL.height, SMALL.width, 3)
        assert scene.image.dtype == np.uint8
        assert SMALL.signs[0] <= len(scene.signs) <= 2 * SMALL.signs[1]  # stacks add signs
        labels = scene.instance_map()
        for number, sign in enumerate(scene.signs, start=1):
            x1, y1, x2, y2 = sign.box
            assert 0 <= x1 < x2 <= SMALL.width and 0 <= y1 < y2 <= SMALL.height
            assert sign.mask.shape == (y2 - y1, x2 - x1) and sign.mask.dtype == bool
            assert mask_box(sign.mask) == (0, 0, x2 - x1, y2 - y1)  # box = the mask's bounds
            assert (labels == number).sum() == sign.mask.sum() > 0  # no pixel in two signs
            # Occluders and poles leave min_visible of a sign; a later sign's box may still
            # cover max_overlap of its box.
            assert 0.3 <= sign.visible <= 1
        targets = scene.targets()
        count = len(scene.signs)
        assert targets["boxes"].shape == (count, 4) and targets["labels"].shape == (count,)
        assert targets["masks"].shape == (count, SMALL.height, SMALL.width)
        assert (targets["masks"].sum(axis=0) == (labels > 0)).all()


def test_sizes_stay_in_the_configured_range(generator):
    sizes, whole = [], []
    for index in range(40):
        for sign in generator.render(11, index, compress=False).signs:
            sizes.append(sign.size)
            if sign.visible == 1.0:
                whole.append(sign.size)
    # A sign's box never outgrows the largest size; an uncovered sign is at least the smallest
    # (a pixel of rounding either way).
    assert max(sizes) <= SMALL.large_max_size + 1
    assert min(whole) >= SMALL.min_size - 1
    assert np.median(sizes) < SMALL.max_size


def test_signs_barely_overlap(scenes):
    for scene in scenes:
        for a, b in combinations(scene.signs, 2):
            width = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
            height = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
            overlap = max(0, width) * max(0, height)
            smaller = min(a.mask.size, b.mask.size)
            assert overlap <= 0.5 * smaller


def test_board_stacks_are_posts_of_separate_boards():
    config = SceneConfig(
        width=640, height=360, min_size=20, max_size=60, signs=(1, 1), board_stack_rate=1.0
    )
    generator = SceneGenerator(NO_REAL_DATA, config)
    stacks = []
    for index in range(8):
        boards = [s for s in generator.render(5, index).signs if s.source == "synthetic:board"]
        if boards:
            stacks.append(sorted(boards, key=lambda sign: sign.box[1]))
    assert len(stacks) >= 4
    for boards in stacks:
        assert len(boards) >= 2  # a post holds two boards or more
        for upper, lower in zip(boards, boards[1:], strict=False):
            if min(upper.visible, lower.visible) < 1:  # an occluder in front of the last
                continue
            # One width, one above the other, touching or a few pixels apart: the case a
            # scene model must part by cores.
            assert abs((upper.box[2] - upper.box[0]) - (lower.box[2] - lower.box[0])) <= 3
            assert -1 <= lower.box[1] - upper.box[3] <= 4
            assert upper.box[2] - upper.box[0] > upper.box[3] - upper.box[1]  # wide boards


def test_boards_are_opt_in_and_leave_a_seed_s_frames_unchanged(generator):
    plain = generator.render(3, 0)
    explicit = SceneGenerator(NO_REAL_DATA, replace(SMALL, board_stack_rate=0.0)).render(3, 0)
    assert np.array_equal(plain.image, explicit.image)
    assert not any(sign.source == "synthetic:board" for sign in plain.signs)


def test_a_box_occluder_takes_its_texture_from_the_bare_background():
    # A pure red sign on a pure blue street. Leaves and posts paint green and grey (never
    # far redder than green); a box copies a window of the street. Copied from the frame
    # instead, a window could carry red sign pixels outside the sign, where no mask marks them.
    backdrop = np.zeros((96, 96, 3), np.uint8)
    backdrop[..., 2] = 200
    outside = np.ones((96, 96), bool)
    outside[32:64, 32:64] = False
    boxes = 0
    for seed in range(40):
        image = backdrop.copy()
        image[32:64, 32:64] = (255, 0, 0)
        owner = np.zeros((96, 96), np.int16)
        owner[32:64, 32:64] = 1
        placed = [_Placed((32, 32, 64, 64), synthetic_cutout(0), 32 * 32)]
        _occlude(image, backdrop, owner, placed, np.random.default_rng(seed), min_visible=0.0)
        red, green = image[outside, 0].astype(int), image[outside, 1].astype(int)
        assert not (red - green > 64).any(), f"seed {seed}: sign red outside the sign"
        red, green, blue = image[32:64, 32:64][owner[32:64, 32:64] == 0].T
        boxes += bool(((red == 0) & (green == 0) & (blue > 0)).any())  # the street's blue
    assert boxes  # some occluders were boxes


def test_an_empty_real_source_is_an_error_unless_synthetic_signs_stand_in(tmp_path):
    tsrd = tmp_path / "tsrd"
    (tsrd / "images").mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tsrd / "images" / "a.png")
    (tsrd / "annotations.txt").write_text("a.png;40;40;2;2;38;38;0;\n", encoding="utf-8")
    no_crop = CropSide(frozenset(), "held-out")  # none of its crops is on the held-out side
    sources = SceneSources(tsrd=tsrd, signs=("tsrd",), crop_side=no_crop)
    with pytest.raises(DataError, match="no tsrd sign crop to draw"):
        SceneGenerator(sources, SMALL).render(0, 0)
    with_synthetic = SceneGenerator(replace(sources, signs=("tsrd", "synthetic")), SMALL)
    signs = with_synthetic.render(0, 0).signs
    assert signs and all(sign.source.startswith("synthetic:") for sign in signs)


def test_ignore_marks_tiny_signs(tmp_path):
    config = SceneConfig(width=96, height=64, min_size=4, max_size=14, signs=(4, 4))
    signs = [s for i in range(6) for s in SceneGenerator(NO_REAL_DATA, config).render(0, i).signs]
    assert any(s.ignore for s in signs) and not all(s.ignore for s in signs)
    assert all(s.ignore == (s.size < config.ignore_below) for s in signs)
    # Marked for stock pycocotools too, which reads `ignore` from `iscrowd`.
    annotations = [sign_annotation(s, 1, 0, config.height, config.width) for s in signs]
    assert all(a["iscrowd"] == int(a["ignore"]) for a in annotations)


def test_coco_round_trips_through_the_reader(written, scenes):
    frames = read_coco_frames(written)
    document = json.loads((written / "annotations.json").read_text())

    assert len(frames) == FRAMES
    assert [c["id"] for c in document["categories"]] == list(range(59))
    assert document["categories"][58]["name"] == "unknown sign"
    assert {c["supercategory"] for c in document["categories"]} == {"sign"}
    assert document["info"]["config"]["width"] == SMALL.width
    expected_keys = {
        "id",
        "image_id",
        "category_id",
        "ctsrd_class",
        "bbox",
        "area",
        "segmentation",
        "iscrowd",
        "ignore",
        "visible",
        "source",
    }
    for annotation in document["annotations"]:
        assert set(annotation) == expected_keys
        assert all(isinstance(v, int) for v in annotation["bbox"])
    for frame, scene in zip(frames, scenes, strict=True):
        assert frame.image_path == written / "images" / f"{frame.image_id:06d}.jpg"
        image = read_rgb(frame.image_path)
        assert image.shape == scene.image.shape
        # The file is the scene as rendered, JPEG compressed once (to within JPEG's error).
        assert np.abs(image.astype(int) - scene.image.astype(int)).mean() < 3
        assert len(frame.instances) == len(scene.signs)
        for instance, sign in zip(frame.instances, scene.signs, strict=True):
            assert instance.box == sign.box
            assert np.array_equal(
                instance_mask(instance, frame.height, frame.width),
                sign.full_mask(frame.height, frame.width),
            )
            assert instance.class_id == sign.class_id
            # A synthetic sign is a CTSRD class, or a panel with none ("unknown sign").
            names = [c.name for c in sign_classes("ctsrd")] + ["unknown sign"]
            assert instance.category == names[58 if sign.class_id is None else sign.class_id]
            assert instance.ignore == sign.ignore
            assert instance.area == sign.mask.sum()


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="min_size <= max_size"):
        SceneConfig(min_size=50, max_size=20)
    with pytest.raises(ValueError, match="signs per frame"):
        SceneConfig(signs=(3, 1))
    with pytest.raises(ValueError, match="unknown background"):
        SceneSources(backgrounds=("beach",))
    with pytest.raises(ValueError, match="no sign source available"):
        SceneGenerator(SceneSources(signs=("tt100k",)), SMALL)


def test_real_sources(scene_data_root):
    config = SceneConfig(width=256, height=144, min_size=10, max_size=60, signs=(3, 5))
    for background in ("video", "negatives", "dfg"):
        for signs in (("tt100k",), ("tsrd",)):
            sources = SceneSources.from_data_root(
                scene_data_root, backgrounds=(background,), signs=signs
            )
            scene = SceneGenerator(sources, config).render(0, 1)
            assert scene.background.split(":")[0] == background
            assert scene.signs and all(s.source.startswith(signs[0]) for s in scene.signs)
            for sign in scene.signs:
                assert mask_box(sign.mask) == (0, 0, *sign.mask.shape[::-1])
                if signs == ("tsrd",):
                    assert sign.class_id is not None


def _file_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_a_crop_side_keeps_each_real_crop_on_one_side(scene_data_root):
    tsrd = sorted((scene_data_root / "ctsrd-real" / "images").iterdir())
    held_out = frozenset(_file_hash(path) for path in tsrd[::3])
    config = SceneConfig(width=256, height=144, min_size=20, max_size=60, signs=(4, 6))
    every = SceneSources.from_data_root(scene_data_root, backgrounds=("video",), signs=("tsrd",))
    offered = {}
    for side in ("held-out", "training"):
        sources = replace(every, crop_side=CropSide(held_out, side))
        generator = SceneGenerator(sources, config)
        offered[side] = generator.real_crop_counts()["tsrd"]
        for index in range(4):
            for sign in generator.render(0, index).signs:
                path = scene_data_root / "ctsrd-real" / "images" / sign.source.split(":")[1]
                assert (_file_hash(path) in held_out) == (side == "held-out"), sign.source
    everything = SceneGenerator(every, config).real_crop_counts()["tsrd"]
    assert offered["held-out"] + offered["training"] == everything
    assert 0 < offered["held-out"] < offered["training"]
    with pytest.raises(ValueError, match="crop side"):
        CropSide(held_out, "test")


def test_dfg_signs_are_opt_in_and_cut_along_their_polygons(dfg_frames, tmp_path):
    assert "dfg" not in SceneSources.from_data_root(tmp_path).signs  # the DFG test stays unseen
    split_frames(dfg_frames, tmp_path / "split", test_share=0.28)
    train = tmp_path / "split" / "train"
    config = SceneConfig(width=320, height=180, min_size=24, max_size=80, signs=(4, 6))
    sources = SceneSources(dfg=train, backgrounds=("dfg",), signs=("dfg",))
    generator = SceneGenerator(sources, config)
    used = {frame.image_path.name for frame in read_coco_frames(train)}
    for index in range(3):
        scene = generator.render(0, index)
        assert scene.background.removeprefix("dfg:") in used
        assert scene.signs and all(sign.class_id is None for sign in scene.signs)
        assert all(sign.source.split(":")[1].split("#")[0] in used for sign in scene.signs)
        # The polygon, not the box: a cut-out leaves some of its box to the street.
        posed = [sign for sign in scene.signs if min(sign.mask.shape) >= 24]
        assert all(sign.mask.mean() < 0.97 for sign in posed)


def test_gtsrb_signs_are_opt_in_european_unknown_signs(gtsrb_real, tmp_path):
    assert "gtsrb" not in SceneSources.from_data_root(tmp_path).signs  # seeds keep their frames
    config = SceneConfig(width=320, height=180, min_size=20, max_size=60, signs=(4, 6))
    generator = SceneGenerator(SceneSources(gtsrb=gtsrb_real, signs=("gtsrb",)), config)
    assert generator.real_crop_counts() == {"gtsrb": 300}
    for index in range(3):
        scene = generator.render(0, index)
        assert scene.signs and all(sign.source.startswith("gtsrb:") for sign in scene.signs)
        assert all(sign.class_id is None for sign in scene.signs)  # not CTSRD's label space
        assert all((gtsrb_real / "images" / sign.source[6:]).is_file() for sign in scene.signs)


def test_cli_offers_the_generator_s_sources():
    # app/commands/data.py keeps its own copies so that `greedysign --help` loads no image code.
    from app.commands import data as data_command
    from data import scenes

    assert data_command.SCENE_BACKGROUNDS == scenes.BACKGROUNDS
    assert data_command.SCENE_SIGN_SOURCES == scenes.SIGN_SOURCES
    assert data_command.SCENE_DEFAULT_SIGN_SOURCES == scenes.DEFAULT_SIGN_SOURCES


def test_cli_writes_scenes(tmp_path, capsys):
    out = tmp_path / "out"
    empty_root = tmp_path / "no-data"
    empty_root.mkdir()
    arguments = ["data", "scenes", str(out), "--frames", "2", "--seed", "1"]
    arguments += ["--width", "128", "--height", "96", "--max-size", "30", "--signs", "1", "3"]
    assert main([*arguments, "--data-root", str(empty_root)]) == 0
    printed = capsys.readouterr().out
    assert "images/min" in printed and "procedural" in printed and "median" in printed
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.jpg", "000001.jpg"]
    assert len(read_coco_frames(out)) == 2
    assert main([*arguments, "--signs", "3", "1"]) == 2
    assert "holds a dataset" in capsys.readouterr().err  # never written over
    arguments[2] = str(tmp_path / "other")
    assert main([*arguments, "--signs", "3", "1"]) == 2
    assert "signs per frame" in capsys.readouterr().err


def test_cli_draws_real_crops_from_one_side_of_the_sign_model_s_split(
    scene_data_root, tmp_path, capsys
):
    out = tmp_path / "held-out"
    reader = (
        Path(__file__).resolve().parents[2] / "model" / "shipped" / "greedysign-ctsrd-resnet18.pt"
    )
    arguments = ["data", "scenes", str(out), "--frames", "3", "--width", "256", "--height", "144"]
    arguments += ["--data-root", str(scene_data_root), "--sign-sources", "tsrd"]
    assert main([*arguments, "--reader-side", "held-out", "--reader", str(reader)]) == 0
    assert f"the held-out side of {reader} (215 tsrd)" in capsys.readouterr().out
    info = json.loads((out / "annotations.json").read_text())["info"]
    assert info["real_crops"] == {"side": "held-out", "model": str(reader)}
    scene_model = reader.with_name("greedysign-scenes-resnet18.pt")
    arguments[2] = str(tmp_path / "other")
    assert main([*arguments, "--reader-side", "training", "--reader", str(scene_model)]) == 2
    assert "takes a sign model" in capsys.readouterr().err


def test_a_frame_too_large_to_render_or_an_infinite_size_is_refused():
    for sides in ((100000, 100000), (20000, 100), (9000, 9000)):  # out of memory, or of cv2
        with pytest.raises(ValueError, match="frame"):
            SceneConfig(width=sides[0], height=sides[1])
    SceneConfig(width=16384, height=100)  # a long strip is small enough
    for size in ({"max_size": float("inf")}, {"large_max_size": float("inf")}):
        with pytest.raises(ValueError, match="all finite"):
            SceneConfig(**size)


@pytest.mark.parametrize(
    "flags",
    [
        ["--width", "100000", "--height", "100000"],
        ["--max-size", "inf"],
        ["--large-max-size", "inf"],
        ["--min-size", "nan"],
        ["--min-size", "-1"],
        ["--stack-rate", "nan"],
        ["--board-stack-rate", "-1"],
        ["--dfg", "no-such-dfg"],
        ["--gtsrb", "no-such-gtsrb"],
    ],
)
def test_cli_refuses_a_bad_option_in_one_line_writing_nothing(flags, tmp_path, capsys):
    """A mistyped --dfg or --gtsrb left its source out, silently, as a bad --data-root would;
    an infinite size or a huge frame ended in a traceback with a folder left behind."""
    out = tmp_path / "out"
    assert main(["data", "scenes", str(out), "--frames", "1", *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert not out.exists()
    if flags[0] in ("--dfg", "--gtsrb"):
        assert f"{flags[0]} {flags[1]}: no such folder" in error
