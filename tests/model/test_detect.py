"""Scene detection (model/detect.py): geometry and padding, tiles, instances from the mask,
crop margins, the whole chain on constructed frames, and the evaluation's matching
(model/detect_eval.py), ignore included."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.frames import FrameInstance, FrameRecord
from model import detect
from model.checkpoint import ModelFileError, load_model
from model.detect import (
    DetectConfig,
    Detection,
    Detector,
    Instance,
    SceneSegmenter,
    box_mask_rle,
    crop_inputs,
    find_instances,
    frame_geometry,
    frame_mask,
    part_board_post,
    part_by_cores,
    prepare_frame,
    solidity,
    split_touching,
    stitch,
    tile_origins,
)
from model.detect_eval import report, rounded
from model.inference import NO_SIGN, SIGN, UNKNOWN_SIGN, Prediction, Predictor, mask_to_rle
from model.reading import grown

# --- geometry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "config", "resized", "padded"),
    [
        ((1080, 1920), DetectConfig(long_side=1024), (576, 1024), (576, 1024)),
        ((720, 1280), DetectConfig(long_side=1024), (576, 1024), (576, 1024)),
        ((576, 720), DetectConfig(long_side=1024), (819, 1024), (832, 1024)),  # enlarged
        ((360, 480), DetectConfig(long_side=1024), (540, 720), (544, 736)),  # by 1.5 at most
        ((360, 480), DetectConfig(long_side=1024, max_upscale=1), (360, 480), (384, 480)),
        ((8, 8), DetectConfig(long_side=1024, max_upscale=1), (8, 8), (32, 32)),  # padded
        ((8, 8), DetectConfig(long_side=1024), (12, 12), (32, 32)),
        ((1, 3), DetectConfig(long_side=64), (2, 4), (32, 32)),
        ((3000, 4000), DetectConfig(long_side=64), (48, 64), (64, 64)),  # huge
    ],
)
def test_frames_keep_their_aspect_and_are_padded_to_32(size, config, resized, padded) -> None:
    geometry = frame_geometry(*size, config)
    assert geometry.resized == resized and geometry.padded == padded
    frame = prepare_frame(np.full((*size, 3), 200, np.uint8), config)
    assert tuple(frame.tensor.shape) == (1, 3, *padded)
    h, w = resized
    # The padding is the mean colour: zero once normalised.
    assert float(frame.tensor[0, :, h:, :].abs().sum()) == 0
    assert float(frame.tensor[0, :, :, w:].abs().sum()) == 0
    assert float(frame.tensor[0, :, :h, :w].abs().min()) > 0


@pytest.mark.parametrize(
    "fields",
    [
        {"max_upscale": 0.5},
        {"long_side": 16},
        {"tile": 48},
        {"threshold": 1.0},
        {"min_solidity": 2},
    ],
)
def test_a_config_out_of_range_is_refused(fields) -> None:
    with pytest.raises(ValueError):
        DetectConfig(**fields)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(736, 256, 64), (576, 256, 32), (64, 256, 0)]
)
def test_tiles_cover_the_axis_and_overlap(length, tile, overlap) -> None:
    origins = tile_origins(length, tile, overlap)
    assert origins[0] == 0 and origins[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in zip(origins, origins[1:], strict=False))


def test_tiled_probabilities_stitch_back_into_the_frame() -> None:
    config = DetectConfig(long_side=640, tile=128, overlap=32)
    frame = prepare_frame(np.zeros((360, 640, 3), np.uint8), config)
    tiles_per_axis = [len(tile_origins(side, 128, 32)) for side in frame.geometry.padded]
    assert frame.tensor.shape[-2:] == (128, 128)
    assert len(frame.origins) == tiles_per_axis[0] * tiles_per_axis[1] == 4 * 7
    truth = np.random.default_rng(0).random((2, *frame.geometry.padded)).astype(np.float32)
    tiles = np.stack([truth[:, y : y + 128, x : x + 128] for y, x in frame.origins])
    np.testing.assert_array_equal(stitch(tiles, frame), truth[:, :360, :640])


def test_each_pixel_comes_from_the_tile_it_lies_deepest_inside() -> None:
    """Near its cut edge a tile sees part of a sign and may draw it a core of its own there:
    the tile that sees it whole decides (a maximum over the tiles kept the stray core, and
    detection parted the sign in two)."""
    config = DetectConfig(long_side=640, tile=128, overlap=32)
    frame = prepare_frame(np.zeros((360, 640, 3), np.uint8), config)
    truth = np.random.default_rng(0).random((1, *frame.geometry.padded)).astype(np.float32)
    tiles = np.stack([truth[:, y : y + 128, x : x + 128] for y, x in frame.origins])
    (_, left), (_, right) = frame.origins[:2]  # two neighbours along the first row
    assert left + 128 - right >= 32
    tiles[0, :, :, -4:] = 1.0  # at its right cut edge, 4 px inside its neighbour's overlap
    tiles[1, :, :, :4] = 1.0  # and the neighbour's at its left one
    np.testing.assert_array_equal(stitch(tiles, frame), truth[:, :360, :640])


# --- instances -----------------------------------------------------------------------------


def disc_map(shape, discs) -> np.ndarray:
    """[1, H, W]: a sign map of discs ((x, y), radius, probability)."""
    probability = np.zeros(shape, np.float32)
    for (x, y), radius, value in discs:
        cv2.circle(probability, (x, y), radius, value, -1)
    return probability[None]


def test_instances_are_components_with_boxes_in_original_pixels() -> None:
    config = DetectConfig(long_side=640)
    geometry = frame_geometry(1080, 1920, config)  # a third of the original
    probability = disc_map((360, 640), [((100, 100), 20, 0.9), ((400, 300), 10, 0.7)])
    probability[0, 5, 5] = 1.0  # one pixel: noise under min_area
    first, second = find_instances(probability, geometry, config)
    assert first.score == pytest.approx(0.9) and second.score == pytest.approx(0.7)
    # Disc of radius 20 around (100, 100) at 1/3 scale: about 240..363 in the original.
    assert first.box == pytest.approx((240, 240, 363, 363), abs=3)
    assert second.box == pytest.approx((1170, 870, 1233, 933), abs=3)
    for instance in (first, second):
        x1, y1, x2, y2 = instance.box
        assert instance.mask.shape == (y2 - y1, x2 - x1)
        # A disc fills about pi/4 of its box (less when few pixels draw it), and the mask
        # reaches every edge of its box.
        assert 0.6 < instance.mask.mean() < 0.85
        assert instance.mask[0].any() and instance.mask[-1].any()
        assert instance.mask[:, 0].any() and instance.mask[:, -1].any()


def test_a_region_wider_than_opencv_can_remap_gets_its_mask() -> None:
    # A 40000x625 frame (25 MP, as the service takes) works at 1024x16: a band across it is
    # a region 40000 original pixels wide, past cv2.remap's limit of 32766.
    config = DetectConfig(require_core=False, min_solidity=0)
    geometry = frame_geometry(625, 40000, config)
    probability = np.zeros((1, *geometry.padded), np.float32)
    probability[0, 4:12, : geometry.resized[1]] = 0.9
    (band,) = find_instances(probability, geometry, config)
    x1, y1, x2, y2 = band.box
    assert (x1, x2) == (0, 40000) and band.mask.shape == (y2 - y1, 40000) and band.mask.all()


@pytest.mark.parametrize("tile", [32, 64, 256])
def test_the_tile_overlap_defaults_to_at_most_half_the_tile(tile) -> None:
    assert DetectConfig(tile=tile).overlap == min(64, tile // 2)
    assert DetectConfig(tile=tile, overlap=8).overlap == 8


def test_an_empty_or_faint_map_has_no_instances() -> None:
    config = DetectConfig(long_side=640)
    geometry = frame_geometry(360, 640, config)
    assert find_instances(np.zeros((1, 360, 640), np.float32), geometry, config) == []
    faint = disc_map((360, 640), [((100, 100), 30, 0.4)])
    assert find_instances(faint, geometry, config) == []


def test_at_most_max_signs_instances_the_best_first() -> None:
    config = DetectConfig(long_side=640, max_signs=2)
    geometry = frame_geometry(360, 640, config)
    discs = [((50 + 100 * i, 100), 10, 0.6 + 0.1 * i) for i in range(4)]
    found = find_instances(disc_map((360, 640), discs), geometry, config)
    assert [round(i.score, 1) for i in found] == [0.9, 0.8]


def test_touching_signs_are_split_and_single_signs_are_not() -> None:
    # Two discs stacked on one pole, touching; a separate disc; a rectangular plate.
    binary = np.zeros((200, 200), np.uint8)
    cv2.circle(binary, (50, 50), 20, 1, -1)
    cv2.circle(binary, (50, 88), 20, 1, -1)
    cv2.circle(binary, (150, 50), 20, 1, -1)
    cv2.rectangle(binary, (100, 120), (190, 160), 1, -1)
    labels = split_touching(binary)
    assert labels.max() == 4
    upper, lower = labels[50, 50], labels[88, 50]
    assert upper != lower and upper > 0 and lower > 0
    assert len(np.unique(labels[120:161, 100:191])) == 1  # the plate stays whole
    geometry = frame_geometry(200, 200, DetectConfig(long_side=200))
    probability = binary.astype(np.float32)[None]
    whole = find_instances(probability, geometry, DetectConfig(long_side=200, split_touching=False))
    split = find_instances(probability, geometry, DetectConfig(long_side=200))
    assert len(whole) == 3 and len(split) == 4


def flush_boards() -> tuple[np.ndarray, np.ndarray]:
    """Three boards stacked flush (no neck between them) with their cores, a board with no
    core and one core speck, which is noise."""
    signs = np.zeros((200, 200), np.uint8)
    cores = np.zeros((200, 200), bool)
    for top in (20, 60, 100):
        signs[top : top + 40, 20:100] = 1
        cores[top + 10 : top + 30, 30:90] = True
    signs[20:60, 140:180] = 1
    cores[150, 150] = True
    return signs, cores


def test_signs_that_touch_are_parted_between_their_cores() -> None:
    signs, cores = flush_boards()
    labels = part_by_cores(signs, cores)
    assert len(np.unique(labels)) == 1 + 4
    boards = [labels[top : top + 40, 20:100] for top in (20, 60, 100)]
    assert all(len(np.unique(board)) == 1 for board in boards)  # each board whole, no more
    assert len({int(board[0, 0]) for board in boards}) == 3
    assert len(np.unique(labels[20:60, 140:180])) == 1
    # Necks cannot part boards stacked flush: the distance watershed keeps them one.
    assert len(np.unique(split_touching(signs))) == 1 + 2


def test_a_model_that_draws_cores_gets_one_instance_per_core() -> None:
    signs, cores = flush_boards()
    maps = np.stack([signs, cores]).astype(np.float32)
    geometry = frame_geometry(200, 200, DetectConfig(long_side=200))
    boards = [(20, 20, 100, 60), (20, 60, 100, 100), (20, 100, 100, 140)]
    found = find_instances(maps, geometry, DetectConfig(long_side=200))
    assert sorted(i.box for i in found) == boards, "the board without a core is no sign"
    keep_all = DetectConfig(long_side=200, require_core=False)
    found = find_instances(maps, geometry, keep_all)
    assert sorted(i.box for i in found) == [*boards, (140, 20, 180, 60)]
    unparted = DetectConfig(long_side=200, split_touching=False, require_core=False)
    assert len(find_instances(maps, geometry, unparted)) == 2
    # A model without cores: nothing is required of regions.
    assert len(find_instances(maps[:1], geometry, DetectConfig(long_side=200))) == 2


def board_post(boards: int, width: int = 150, height: int = 45) -> tuple[np.ndarray, Instance]:
    """A post of `boards` white direction boards stacked flush on a grey frame, each with its
    dark border and a line of text, and the one region a scene model marks over them."""
    rgb = np.full((40 + boards * height, 40 + width, 3), 120, np.uint8)
    for k in range(boards):
        top = 20 + k * height
        cv2.rectangle(rgb, (20, top), (19 + width, top + height - 1), (30, 30, 30), -1)
        cv2.rectangle(rgb, (22, top + 2), (17 + width, top + height - 3), (235, 235, 235), -1)
        cv2.putText(rgb, "Celje 12", (35, top + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    box = (20, 20, 20 + width, 20 + boards * height)
    return rgb, Instance(box, np.ones((boards * height, width), bool), 0.9)


def test_a_post_of_boards_is_parted_at_its_seams() -> None:
    rgb, post = board_post(3)
    parts = part_board_post(rgb, post)
    assert len(parts) == 3
    for k, part in enumerate(parts):
        board = (20, 20 + 45 * k, 170, 65 + 45 * k)
        assert all(abs(a - b) <= 3 for a, b in zip(part.box, board, strict=True)), part.box
        assert part.mask.shape == (part.box[3] - part.box[1], part.box[2] - part.box[0])
        assert part.score == post.score
    # find_instances parts it when it has the frame, and only then.
    maps = np.zeros((1, *rgb.shape[:2]), np.float32)
    maps[0, 20:155, 20:170] = 1
    config = DetectConfig(long_side=400, max_upscale=1)  # the map is the frame's own size
    geometry = frame_geometry(*rgb.shape[:2], config)
    assert len(find_instances(maps, geometry, config, rgb)) == 3
    assert len(find_instances(maps, geometry, config)) == 1
    unparted = DetectConfig(long_side=400, max_upscale=1, part_boards=False)
    assert len(find_instances(maps, geometry, unparted, rgb)) == 1


def test_one_board_a_panel_a_speed_limit_disc_and_texture_stay_whole() -> None:
    rgb, board = board_post(1)
    assert part_board_post(rgb, board) == [board]
    panel = Instance((0, 0, 60, 120), np.ones((120, 60), bool), 0.9)
    assert part_board_post(np.full((120, 60, 3), 200, np.uint8), panel) == [panel]
    # A disc's text does not cross it whole (nor are its halves boards).
    disc = np.full((100, 100, 3), 120, np.uint8)
    cv2.circle(disc, (50, 50), 45, (200, 20, 20), -1)
    cv2.circle(disc, (50, 50), 34, (250, 250, 250), -1)
    cv2.putText(disc, "60", (24, 66), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 4)
    mask = np.zeros((100, 100), np.uint8)
    cv2.circle(mask, (50, 50), 45, 1, -1)
    sign = Instance((5, 5, 96, 96), mask[5:96, 5:96] > 0, 0.9)
    assert part_board_post(disc, sign) == [sign]
    # Texture has edges across every row, but no line: foliage or noise is no post.
    noise = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    region = Instance((0, 0, 160, 90), np.ones((90, 160), bool), 0.9)
    assert part_board_post(noise, region) == [region]


def shape_masks() -> dict[str, np.ndarray]:
    """Sign faces (convex), a sign with a bite taken out of it, and two ragged regions."""
    canvas = lambda: np.zeros((80, 80), np.uint8)  # noqa: E731
    disc, triangle, octagon, bitten, cross, ring = (canvas() for _ in range(6))
    cv2.circle(disc, (40, 40), 30, 1, -1)
    cv2.fillConvexPoly(triangle, np.array([[40, 8], [75, 70], [5, 70]]), 1)
    angles = np.pi / 8 + np.arange(8) * np.pi / 4
    corners = np.stack([40 + 32 * np.cos(angles), 40 + 32 * np.sin(angles)], 1)
    cv2.fillConvexPoly(octagon, corners.round().astype(np.int32), 1)
    cv2.circle(bitten, (40, 40), 30, 1, -1)
    bitten[50:, 50:] = 0  # a corner hidden behind a branch
    cross[30:50, 5:75] = cross[5:75, 30:50] = 1  # lane arrows, façade joints
    cv2.circle(ring, (40, 40), 30, 1, 6)  # a wheel, a round window's frame
    masks = dict(disc=disc, triangle=triangle, octagon=octagon, board=np.ones((30, 90), np.uint8))
    masks.update(bitten=bitten, cross=cross, ring=ring)
    return {name: mask > 0 for name, mask in masks.items()}


def test_solidity_is_high_for_sign_faces_and_low_for_ragged_regions() -> None:
    values = {name: solidity(mask) for name, mask in shape_masks().items()}
    for face in ("disc", "triangle", "octagon", "board"):
        assert values[face] > 0.97, values
    assert values["bitten"] > DetectConfig.min_solidity, values  # a partly hidden sign stays
    assert values["cross"] < 0.7 and values["ring"] < 0.5, values
    assert solidity(np.zeros((5, 5), bool)) == 0.0
    assert solidity(np.ones((1, 1), bool)) == 1.0


def test_find_instances_drops_ragged_regions_unless_told_to_keep_every_shape() -> None:
    masks = shape_masks()
    maps = np.zeros((1, 100, 200), np.float32)
    maps[0, 10:90, 10:90] = masks["disc"]
    maps[0, 10:90, 110:190] = masks["cross"]
    config = DetectConfig(long_side=200, max_upscale=1)  # the map is the frame's own size
    geometry = frame_geometry(100, 200, config)
    assert [i.box for i in find_instances(maps, geometry, config)] == [(20, 20, 81, 81)]
    keep_all = DetectConfig(long_side=200, max_upscale=1, min_solidity=0)
    assert len(find_instances(maps, geometry, keep_all)) == 2


# --- crops ---------------------------------------------------------------------------------


def test_crops_have_a_15_percent_margin_within_the_frame() -> None:
    assert grown((100, 200, 140, 300), 1080, 1920, 0.15) == (94, 185, 146, 315)
    assert grown((0, 0, 40, 100), 1080, 1920, 0.15) == (0, 0, 46, 115)
    assert grown((1900, 1000, 1920, 1080), 1080, 1920, 0.15) == (1897, 988, 1920, 1080)


def test_crops_come_from_the_original_frame_at_full_resolution() -> None:
    rgb = np.zeros((1080, 1920, 3), np.uint8)
    rgb[500:600, 1000:1100] = (255, 0, 0)
    seen = []

    def preprocess(crop: np.ndarray) -> torch.Tensor:
        seen.append(crop.copy())
        return torch.zeros(3, 8, 8)

    instance = Instance((1000, 500, 1100, 600), np.ones((100, 100), bool), 0.9)
    [(_, size)] = crop_inputs(rgb, [instance], preprocess, 0.15)
    assert size == (130, 130) and seen[0].shape == (130, 130, 3)
    assert (seen[0][15:115, 15:115] == (255, 0, 0)).all() and seen[0][:15].max() == 0


# --- the whole chain -----------------------------------------------------------------------


class RednessSegmenter:
    """Stands in for a scene model (unavoidable for a deterministic frame): the sign
    probability of a pixel is its redness, read back from the normalised input."""

    def probabilities(self, batch: torch.Tensor) -> np.ndarray:
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        rgb = batch * std + mean
        return (rgb[:, :1] - rgb[:, 1:].amax(dim=1, keepdim=True)).clamp(0, 1).numpy()


class ScriptedPredictor:
    """A crop classifier that answers by the crop's colour: red crops are class 3, reddish
    crops ("faded") unknown signs, the rest no sign."""

    image_size = 8

    def preprocess(self, crop: np.ndarray) -> torch.Tensor:
        centre = crop[crop.shape[0] // 2, crop.shape[1] // 2].astype(np.float32)
        return torch.from_numpy(centre)[:, None, None]

    def predict_batch(self, batch, sizes, top_k=1):
        answers = []
        for colour in batch[:, :, 0, 0]:
            red = float(colour[0])
            kind = SIGN if red > 200 else UNKNOWN_SIGN if red > 120 else NO_SIGN
            answers.append(
                Prediction(
                    class_id=3 if kind == SIGN else None,
                    class_name={SIGN: "Speed limit 40 km/h", UNKNOWN_SIGN: "unknown sign"}.get(
                        kind, "no sign"
                    ),
                    confidence=0.9,
                    top_k=[],
                    box=None,
                    mask=np.zeros(sizes[0], bool),
                    kind=kind,
                )
            )
        return answers


def constructed_frame() -> np.ndarray:
    rgb = np.full((720, 1280, 3), 90, np.uint8)
    cv2.circle(rgb, (200, 300), 40, (250, 20, 20), -1)  # a red sign
    cv2.circle(rgb, (900, 200), 20, (140, 60, 60), -1)  # a faded one
    rgb[600:700, 1100:1200] = (255, 255, 255)  # a white board: no probability at all
    return rgb


def test_signs_of_a_constructed_frame_are_found_read_and_placed() -> None:
    config = DetectConfig(long_side=640, threshold=0.2)
    detector = Detector(RednessSegmenter(), ScriptedPredictor(), config)
    signs = detector.detect(constructed_frame())
    assert [s.kind for s in signs] == [SIGN, UNKNOWN_SIGN]
    red, faded = signs
    assert red.class_id == 3 and faded.class_id is None
    assert red.box == pytest.approx((160, 260, 241, 341), abs=3)
    assert faded.box == pytest.approx((880, 180, 921, 221), abs=3)
    assert red.mask.mean() == pytest.approx(np.pi / 4, abs=0.05)


def test_an_instance_read_as_no_sign_is_dropped() -> None:
    rgb = constructed_frame()
    rgb[:] = 90
    cv2.circle(rgb, (600, 400), 30, (110, 40, 40), -1)  # red enough to mark, too dull to read
    detector = Detector(
        RednessSegmenter(), ScriptedPredictor(), DetectConfig(long_side=640, threshold=0.1)
    )
    assert len(detector.instances(rgb)) == 1
    assert detector.detect(rgb) == []


@pytest.fixture(scope="module")
def crop_model(tiny_model_path: Path) -> Predictor:
    return Predictor.load(tiny_model_path, "cpu")


def test_a_crop_model_is_refused_as_a_scene_model(tiny_model_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not a scene model"):
        SceneSegmenter.load(tiny_model_path, "cpu")


@pytest.mark.parametrize(
    ("height", "width", "value"),
    [(720, 1280, 128), (1, 1, 0), (5, 3, 255), (7, 4000, 30), (3000, 2000, 128)],
)
def test_grey_tiny_and_huge_frames_get_answers(
    whole_frame_scene_model_path, crop_model, height, width, value
) -> None:
    """The real SignNet path, with a scene model that marks every pixel: the whole frame
    is one instance, whatever its size, and it is read."""
    scene = SceneSegmenter.load(whole_frame_scene_model_path, "cpu")
    detector = Detector(scene, crop_model, DetectConfig(long_side=64))
    instances = detector.instances(np.full((height, width, 3), value, np.uint8))
    assert [i.box for i in instances] == [(0, 0, width, height)]
    assert instances[0].mask.all()
    signs = detector.detect(np.full((height, width, 3), value, np.uint8))
    assert len(signs) <= 1 and all(s.box == (0, 0, width, height) for s in signs)


def test_frames_with_no_sign_have_none(empty_scene_model_path, crop_model) -> None:
    scene = SceneSegmenter.load(empty_scene_model_path, "cpu")
    detector = Detector(scene, crop_model, DetectConfig(long_side=64, tile=32, overlap=8))
    assert detector.detect(constructed_frame()) == []


def test_a_random_scene_model_runs_whole_and_tiled(tiny_scene_model_path, crop_model) -> None:
    scene = SceneSegmenter.load(tiny_scene_model_path, "cpu")
    rgb = constructed_frame()
    for config in (DetectConfig(long_side=128), DetectConfig(long_side=128, tile=64, overlap=16)):
        for sign in Detector(scene, crop_model, config).detect(rgb):
            x1, y1, x2, y2 = sign.box
            assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
            assert sign.mask.shape == (y2 - y1, x2 - x1) and sign.kind != NO_SIGN


def test_a_mirrored_pass_averages_the_frame_and_its_mirror_image(tiny_scene_model_path) -> None:
    plain = SceneSegmenter.load(tiny_scene_model_path, "cpu")
    mirrored = SceneSegmenter.load(tiny_scene_model_path, "cpu", mirror=True)
    assert not plain.mirror and mirrored.mirror  # on a CPU it is asked for, not the default
    frames = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    expected = (plain.probabilities(frames) + plain.probabilities(frames.flip(-1))[..., ::-1]) / 2
    averaged = mirrored.probabilities(frames)
    assert averaged.shape == expected.shape == (2, 1, 64, 96)
    np.testing.assert_allclose(averaged, expected, atol=1e-5)
    # The average of a frame and its mirror image is the same for either of them.
    np.testing.assert_allclose(
        mirrored.probabilities(frames.flip(-1)), averaged[..., ::-1], atol=1e-5
    )


def test_the_scene_pass_runs_without_cudnn_s_search_per_shape(
    tiny_scene_model_path, monkeypatch
) -> None:
    """The sign model turns cudnn.benchmark on for the process (its inputs are S x S); a
    frame's shape follows its size, and a search per shape would stall the inference thread."""
    scene = SceneSegmenter.load(tiny_scene_model_path, "cpu")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    searching, segment = [], scene.model.segment
    monkeypatch.setattr(
        scene.model,
        "segment",
        lambda *args: searching.append(torch.backends.cudnn.benchmark) or segment(*args),
    )
    scene.probabilities(torch.zeros(1, 3, 64, 96))
    assert searching == [False] and torch.backends.cudnn.benchmark is True


def test_the_scene_pass_runs_channels_last_with_the_plain_layout_s_answers(
    tiny_scene_model_path,
) -> None:
    """Channels-last is a speed choice (oneDNN on the CPU): the maps must not change."""
    scene = SceneSegmenter.load(tiny_scene_model_path, "cpu", bf16=False)
    conv = next(m for m in scene.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain, _ = load_model(tiny_scene_model_path, torch.device("cpu"))
    frames = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = torch.sigmoid(plain.segment(plain.encode(frames), frames.shape[-2:]))
    np.testing.assert_allclose(scene.probabilities(frames), expected.numpy(), atol=1e-5)


def test_bf16_on_a_cpu_is_close_to_float32(tiny_scene_model_path) -> None:
    plain = SceneSegmenter.load(tiny_scene_model_path, "cpu", bf16=False)
    half = SceneSegmenter.load(tiny_scene_model_path, "cpu", bf16=True)
    assert (plain.dtype_name, half.dtype_name) == ("float32", "bfloat16")
    frames = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    answer = half.probabilities(frames)
    assert answer.dtype == np.float32  # returned in float32 whatever the pass ran in
    np.testing.assert_allclose(answer, plain.probabilities(frames), atol=0.05)


@pytest.mark.parametrize("amx", [True, False])
def test_bf16_is_the_cpu_default_only_where_the_cpu_has_amx(
    tiny_scene_model_path, monkeypatch, amx
) -> None:
    monkeypatch.setattr(detect, "cpu_has_amx", lambda: amx)
    default = SceneSegmenter.load(tiny_scene_model_path, "cpu")
    assert default.dtype_name == ("bfloat16" if amx else "float32")


def test_box_masks_encode_as_the_whole_frame_would() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 20, 2))
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x2, y2 = int(rng.integers(x1 + 1, width + 1)), int(rng.integers(y1 + 1, height + 1))
        mask = rng.random((y2 - y1, x2 - x1)) < 0.5
        full = frame_mask(mask, (x1, y1, x2, y2), height, width)
        assert box_mask_rle(mask, (x1, y1, x2, y2), height, width) == mask_to_rle(full)


# --- evaluation ----------------------------------------------------------------------------


def sign(box, ignore=False, class_id=None) -> FrameInstance:
    x1, y1, x2, y2 = box
    polygon = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
    return FrameInstance(box, "sign", 1, ignore, (polygon,), class_id)


def found(box, score=0.9, class_id=None) -> Detection:
    x1, y1, x2, y2 = box
    return Detection(box, np.ones((y2 - y1, x2 - x1), bool), score, class_id, "x", SIGN, 0.9)


def test_matching_counts_hits_misses_and_false_signs_and_ignores_ignored_signs() -> None:
    frames = [
        FrameRecord(
            Path("a.jpg"),
            200,
            100,
            (
                sign((10, 10, 30, 30)),  # small, found
                sign((100, 10, 150, 60)),  # medium, missed
                sign((150, 70, 160, 80), ignore=True),  # ignored: a detection on it is free
            ),
        ),
        FrameRecord(Path("b.jpg"), 200, 100, (sign((0, 0, 120, 100), class_id=5),)),  # large
    ]
    detections = [
        [
            found((11, 11, 31, 31)),  # IoU 0.82 with the small sign
            found((150, 70, 160, 80)),  # on the ignored sign: neither right nor wrong
            found((60, 60, 70, 70), score=0.5),  # nothing there: a false sign
        ],
        [found((0, 0, 120, 90), class_id=5)],  # IoU 0.9, right class
    ]
    result = report(frames, detections)
    assert (result["signs"], result["ignored"], result["detections"]) == (3, 1, 4)
    assert (result["true_positives"], result["false_positives"], result["false_negatives"]) == (
        2,
        1,
        1,
    )
    assert result["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["false_signs_per_frame"] == 0.5
    sizes = result["recall_by_size"]
    assert sizes["small (<32)"] == {"recall": 1.0, "signs": 1}
    assert sizes["medium (32-96)"] == {"recall": 0.0, "signs": 1}
    assert sizes["large (>96)"] == {"recall": 1.0, "signs": 1}
    assert sizes["32 and more"] == {"recall": 0.5, "signs": 2}
    # The bar's range leaves out the 10-px false sign and the small sign's hit. Drawn again,
    # the two frames give recall 0 (a, a), 1/2 or 1 (b, b).
    assert result["at_32_px_and_more"] == {
        "precision": 1.0,
        "recall": 0.5,
        "false_signs_per_frame": 0.0,
        "recall_interval": [0.0, 1.0],
        "false_signs_per_frame_interval": [0.0, 0.0],
    }
    # Mask IoU of the matched: 361/439 (small, shifted by one) and 0.9 (large).
    assert result["mask_iou"] == pytest.approx((361 / 439 + 0.9) / 2, abs=1e-3)
    assert result["class_accuracy"] == 1.0 and result["class_accuracy_signs"] == 1


def test_the_bar_counts_false_signs_of_32_px_and_more_only() -> None:
    frames = [FrameRecord(Path("a.jpg"), 200, 100, (sign((0, 0, 40, 40)),))]
    detections = [[found((0, 0, 40, 40)), found((100, 0, 140, 20)), found((150, 0, 181, 31))]]
    result = report(frames, detections)
    assert result["false_signs_per_frame"] == 2.0
    assert result["at_32_px_and_more"] == {
        "precision": 0.5,
        "recall": 1.0,
        "false_signs_per_frame": 1.0,
        "recall_interval": [1.0, 1.0],  # one frame: nothing to draw but itself
        "false_signs_per_frame_interval": [1.0, 1.0],
    }


def test_the_bar_s_intervals_narrow_as_frames_add_up() -> None:
    def bar(frame_count: int) -> dict:
        """Frames of one sign each, found in 3 of every 10; a false sign in every other."""
        frames = [
            FrameRecord(Path(f"{k}.jpg"), 200, 100, (sign((0, 0, 40, 40)),))
            for k in range(frame_count)
        ]
        detections = [
            [found((0, 0, 40, 40))] * (k % 10 < 3) + [found((100, 0, 140, 40))] * (k % 2)
            for k in range(frame_count)
        ]
        return report(frames, detections)["at_32_px_and_more"]

    few, many = bar(10), bar(200)
    assert few["recall"] == many["recall"] == 0.3
    assert few["false_signs_per_frame"] == many["false_signs_per_frame"] == 0.5
    for result in (few, many):
        low, high = result["recall_interval"]
        assert low < 0.3 < high
        low, high = result["false_signs_per_frame_interval"]
        assert low < 0.5 < high
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    # A binomial's 95 % interval: about +-0.28 for 10 frames, +-0.06 for 200.
    assert 0.4 < width(few["recall_interval"]) < 0.7
    assert 0.08 < width(many["recall_interval"]) < 0.16
    assert bar(10) == few  # seeded: the same frames, the same intervals


def test_a_detection_under_iou_half_is_a_miss_and_a_false_sign() -> None:
    frames = [FrameRecord(Path("a.jpg"), 100, 100, (sign((0, 0, 40, 40)),))]
    result = report(frames, [[found((20, 20, 60, 60))]])  # IoU 400 / 2800
    assert (result["true_positives"], result["false_positives"], result["false_negatives"]) == (
        0,
        1,
        1,
    )
    empty = report(frames, [[]])
    assert empty["recall"] == 0.0 and empty["precision"] is None and empty["detections"] == 0


def test_scores_are_rounded_and_what_json_cannot_hold_is_none() -> None:
    assert rounded(0.123456) == 0.1235 and rounded(np.float32(1)) == 1.0
    assert rounded(None) is None and rounded(float("nan")) is None and rounded(np.inf) is None
