"""The benchmark scripts run as BENCHMARKS.md tells users to run them (small sizes here)."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _cli_json(*args: str) -> dict:
    """`greedysign ARGS --device cpu` in a process of its own: its JSON output."""
    done = subprocess.run(
        [sys.executable, "-m", "app", *args, "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout)


def _write_small_scenes(folder: Path) -> None:
    """Two generated 320x192 scenes of synthetic signs of 32-64 px, as a COCO frames folder."""
    from data.scenes import SceneConfig, SceneSources, write_scenes

    config = SceneConfig(width=320, height=192, min_size=32, max_size=64, signs=(2, 3))
    write_scenes(
        folder, frames=2, seed=0, config=config, sources=SceneSources(signs=("synthetic",))
    )


def test_train_memory_reports_the_greedy_to_sgd_ratio_of_a_split() -> None:
    # One explicit two-module split: SGD, three sequential greedy phases and the simultaneous
    # one, each in its own process.
    split = "stem+layer1,layer2+layer3+layer4"
    done = _run(
        "train_memory.py",
        *("--batch-size", "8", "--image-size", "32", "--steps", "1", "--splits", split),
        *("--schedules", "sequential", "simultaneous"),
    )
    assert done.returncode == 0, done.stderr
    ratios = re.findall(
        r"^split (\S+) (\w+) \(K=(\d)\): .* = (\d\.\d\d);", done.stdout, re.MULTILINE
    )
    assert [(name, schedule, int(k)) for name, schedule, k, _ in ratios] == [
        (split, "sequential", 2),
        (split, "simultaneous", 2),
    ]
    sequential, simultaneous = (float(row[3]) for row in ratios)
    # One module's activations at a time either way; the simultaneous schedule holds every
    # module's weights, gradients and optimizer state at once.
    assert 0 < sequential < simultaneous


@pytest.mark.skipif(torch.cuda.is_available(), reason="there is a GPU: the real check applies")
def test_gpu_check_says_there_is_no_cuda_device_and_exits_0() -> None:
    done = _run("gpu_check.py")
    assert done.returncode == 0
    assert "no CUDA device" in done.stdout


def test_official_layout_from_the_shared_sample_trains_with_the_papers_split(
    ctsrd_real: Path, tmp_path: Path
) -> None:
    done = _run("tsrd_official_sample.py", "--sample", str(ctsrd_real), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "wrote 1996 train and 972 test files" in done.stdout
    from data.load import load_dataset
    from data.split import cross_split_copies, train_test_split

    index = load_dataset(tmp_path)
    assert index.layout == "official"
    train, test = train_test_split(index, official=True)
    assert (len(train), len(test)) == (1996, 972)
    # The sample's images that the release holds in both splits, with all their test copies.
    leaked = cross_split_copies(train, test)
    assert leaked > 42

    from model.options import get_args_parser
    from model.train import main

    run = tmp_path / "run"
    args = get_args_parser().parse_args(
        ["--data", str(tmp_path), "--split", "official", "--method", "sgd", "--epochs", "1"]
        + ["--image-size", "32", "--batch-size", "64", "--workers", "0", "--out", str(run)]
    )
    metrics = main(args)
    split = json.loads((run / "metrics.json").read_text())["split"]
    assert split["kind"] == "official (the release's files)"
    assert (split["train_images"], split["test_images"]) == (1996, 972)
    assert split["test_images_also_in_train"] == leaked
    assert metrics["images"] == 972


def test_open_set_curve_tabulates_and_draws_each_run(tmp_path) -> None:
    # A run's metrics.json as training writes it: the sweep of thresholds on the held-out side.
    run = tmp_path / "run-a"
    run.mkdir()
    points = [
        {"threshold": round(t / 10, 2), "accuracy": 0.99 - t / 100, "rejection_rate": 0.9 + t / 100}
        for t in range(11)
    ]
    metrics = {"method": "sgd", "operating_points": points, "threshold": 0.5}
    metrics |= {"accuracy": 0.94, "rejection_rate": 0.95}
    (run / "metrics.json").write_text(json.dumps(metrics))
    figure = tmp_path / "curve.png"
    done = _run("open_set_curve.py", str(run), "--out", str(figure))
    assert done.returncode == 0, done.stderr
    assert "| 0.50 | 94.00 / 95.00 |" in done.stdout
    assert figure.stat().st_size > 1000


def _bench_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Registered first: the dataclasses of a module look their module up while it loads.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_detect_misses_tells_merged_loose_and_unmarked_signs_apart(tmp_path) -> None:
    misses = _bench_module("detect_misses")
    upper, lower, alone = (0, 0, 40, 40), (0, 40, 40, 80), (100, 0, 140, 40)
    signs = [upper, lower, alone]
    assert misses.why_missed(alone, signs, [(101, 1, 139, 41)]) == "found"
    assert misses.why_missed(upper, signs, [(0, 0, 40, 84)]) == "merged"
    assert misses.why_missed(alone, signs, [(120, 20, 200, 100)]) == "loose"
    assert misses.why_missed(alone, signs, [(0, 0, 40, 80)]) == "not marked"

    _write_small_scenes(tmp_path)
    done = _run("detect_misses.py", "--data", str(tmp_path))
    assert done.returncode == 0, done.stderr
    signs_line, counts_line, *background_lines = done.stdout.splitlines()
    total = re.search(r": (\d+) signs of 32 px and more", signs_line)
    counts = re.findall(r"(found|merged|loose|not marked) (\d+)", counts_line)
    assert total and sum(int(n) for _, n in counts) == int(total.group(1)) > 0
    # The same signs again, by the kind of background they were pasted on.
    assert background_lines and all(line.startswith("  on ") for line in background_lines)
    by_background = re.findall(r"(found|merged|loose|not marked) (\d+)", "".join(background_lines))
    assert sum(int(n) for _, n in by_background) == int(total.group(1))


def test_grabcut_grows_a_piece_of_a_sign_to_the_sign_and_no_further() -> None:
    from model.detect import Instance

    variants = _bench_module("detect_variants")
    rng = np.random.default_rng(0)
    frame = rng.integers(90, 130, (200, 300, 3)).astype(np.uint8)  # grey, textured road side
    frame[60:140, 100:180] = (200, 30, 30)  # a red panel of 80 x 80 px
    # Half the panel's side: the window, three times the piece's, holds the whole panel.
    piece = Instance((120, 80, 160, 120), np.ones((40, 40), bool), 0.9)
    x1, y1, x2, y2 = variants.grabcut_grown(frame, piece).box
    assert abs(x1 - 100) <= 4 and abs(y1 - 60) <= 4 and abs(x2 - 180) <= 4 and abs(y2 - 140) <= 4

    # A region that already covers its panel stays within it.
    whole = Instance((100, 60, 180, 140), np.ones((80, 80), bool), 0.9)
    x1, y1, x2, y2 = variants.grabcut_grown(frame, whole).box
    assert x1 >= 96 and y1 >= 56 and x2 <= 184 and y2 <= 144


def test_detect_variants_scores_the_shipped_steps_as_eval_detect_does(tmp_path) -> None:
    from model.runs import SHIPPED_MODEL

    _write_small_scenes(tmp_path)
    done = _run("detect_variants.py", "--data", str(tmp_path), "--model", str(SHIPPED_MODEL))
    assert done.returncode == 0, done.stderr
    rows = {
        name.strip(): (float(recall), float(bar_false), float(all_false))
        for name, recall, bar_false, all_false in re.findall(
            r"^  (.+?)\s+(\d\.\d\d)  (\d+\.\d\d)  (\d+\.\d\d)", done.stdout, re.MULTILINE
        )
    }
    assert {
        "shipped",
        "no reader",
        "P(no sign) < 0.2",
        "+ long side 512",
        "coarse over fragments",
        "reader's box at 1.0 where larger",
        "GrabCut-grown",
        "GrabCut-grown where 2-16x",
    } <= rows.keys()
    # The reader only drops regions: without it recall and false signs can only be higher.
    assert rows["no reader"][0] >= rows["shipped"][0]
    assert rows["no reader"][2] >= rows["shipped"][2]

    result = _cli_json("eval-detect", "--data", str(tmp_path), "--model", str(SHIPPED_MODEL))
    bar = result["at_32_px_and_more"]
    assert rows["shipped"] == (
        round(bar["recall"], 2),
        round(bar["false_signs_per_frame"], 2),
        round(result["false_signs_per_frame"], 2),
    )


def test_track_variants_score_the_shipped_tracker_as_eval_track_does(tmp_path) -> None:
    from data.drives import DriveConfig, write_drives
    from data.scenes import SceneConfig, SceneSources
    from model.runs import SHIPPED_MODEL

    config = SceneConfig(width=256, height=160, min_size=24, max_size=48, signs=(2, 3))
    write_drives(
        tmp_path,
        drives=2,
        seed=0,
        config=config,
        drive=DriveConfig(frames=3),
        sources=SceneSources(signs=("synthetic",)),
    )
    done = _run("track_variants.py", "--data", str(tmp_path), "--model", str(SHIPPED_MODEL))
    assert done.returncode == 0, done.stderr
    rows = {
        name.strip(): (float(mota), float(idf1), float(false_tracks))
        for name, mota, idf1, false_tracks in re.findall(
            r"^(.+?) MOTA (-?\d+\.\d+)  IDF1 (\d\.\d+).*false tracks/video (\d+\.\d+)",
            done.stdout,
            re.MULTILINE,
        )
    }
    assert {"shipped", "IoU 0.3", "max age 2", "shown from hit 3"} <= rows.keys()
    # Showing a track only from its third hit can only drop tracks, never add one.
    assert rows["shown from hit 3"][2] <= rows["shipped"][2]

    result = _cli_json("eval-track", "--data", str(tmp_path), "--model", str(SHIPPED_MODEL))
    assert result["videos"] == 2 and result["frames"] == 6
    assert rows["shipped"] == (
        round(result["mota"], 3),
        round(result["idf1"], 3),
        round(result["false_tracks_per_video"], 2),
    )


def test_detect_closeups_counts_the_photos_whose_sign_is_found(tmp_path) -> None:
    from data.synth import generate_synthetic

    missing = _run("detect_closeups.py", "--data", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no TSRD plain folder" in missing.stderr
    photos = generate_synthetic(tmp_path, per_class=1, classes={0, 1, 2})
    done = _run(
        "detect_closeups.py", "--data", str(tmp_path), "--every", "1", "--max-upscales", "1", "8"
    )
    assert done.returncode == 0, done.stderr
    line = r"max_upscale (\S+): sign found in (\d+), any detection in (\d+)"
    rows = re.findall(line, done.stdout)
    assert [row[0] for row in rows] == ["1", "8"]
    for _, found, detected in rows:
        assert int(found) <= int(detected) <= photos


def test_read_small_reads_held_out_signs_at_each_size(tiny_model_path, ctsrd_real) -> None:
    from model.runs import SHIPPED_MODEL

    unsplit = _run("read_small.py", "--model", str(tiny_model_path))
    assert unsplit.returncode == 2 and "records no held-out images" in unsplit.stderr
    done = _run(
        "read_small.py",
        *("--model", str(SHIPPED_MODEL), "--data", str(ctsrd_real)),
        *("--every", "10", "--long-sides", "24", "8"),
    )
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"long side (\S+): tsrd (\d\.\d{3}) \((\d+)\)", done.stdout)
    assert [row[0] for row in rows] == ["unshrunk", "24", "8"]
    counts = {int(count) for _, _, count in rows}
    assert len(counts) == 1 and counts.pop() > 10
    unshrunk, _, at_8 = (float(share) for _, share, _ in rows)
    # The shipped reader reads TSRD photos (0.95 held out); at 8 px no sign keeps its class.
    assert unshrunk > 0.8 and at_8 < unshrunk


def test_read_true_boxes_reads_every_sign_of_a_generated_folder(tmp_path, tiny_model_path) -> None:
    from data.frames import read_coco_frames

    _write_small_scenes(tmp_path)
    signs = [s for f in read_coco_frames(tmp_path) for s in f.instances if not s.ignore]
    done = _run("read_true_boxes.py", "--data", str(tmp_path), "--model", str(tiny_model_path))
    assert done.returncode == 0, done.stderr
    rows = {
        key.strip(): (float(share), int(count), int(no_sign))
        for key, share, count, no_sign in re.findall(
            r"^  (.+?)\s+(\d\.\d{3}) of (\d+) \(answered no sign: (\d+)\)", done.stdout, re.M
        )
    }
    assert rows["all"][1] == rows["synthetic"][1] == len(signs) > 0
    bands = [row for key, row in rows.items() if key.startswith("synthetic ")]
    assert sum(count for _, count, _ in bands) == len(signs)
    assert sum(no_sign for _, _, no_sign in bands) == rows["all"][2]
    misreads = int(re.search(r"misreads (\d+);", done.stdout).group(1))
    assert misreads == round(len(signs) * (1 - rows["all"][0]))


def test_gpu_check_gives_the_service_benches_every_setting_they_read(monkeypatch) -> None:
    """gpu_check runs service_load's engine and service with its own arguments; two they read
    were missing, and the check broke at its third step, on the lent GPU's time."""
    monkeypatch.syspath_prepend(str(BENCH))  # gpu_check imports its sibling benches
    gpu_check = _bench_module("gpu_check")
    service_load = sys.modules["service_load"]
    args = gpu_check.get_args_parser().parse_args([])
    read = set()
    for function in (service_load.measure_engine, service_load.running_service):
        read |= set(re.findall(r"\bargs\.(\w+)", inspect.getsource(function)))
    assert "scene_long_side" in read
    assert [name for name in sorted(read) if not hasattr(args, name)] == []


def test_detect_speed_times_each_step_on_small_frames_and_frames_with_no_sign(
    tiny_model_path,
) -> None:
    # A frame under 240 px high could not hold its drawn signs (a ValueError), and a scene
    # model that found none stacked an empty batch of crops.
    common = ("--model", str(tiny_model_path), "--frames", "1", "--long-sides", "64")
    drawn = _run("detect_speed.py", "--size", "320x180", "--signs", "2", *common)
    assert drawn.returncode == 0, drawn.stderr
    assert "2 signs drawn" in drawn.stdout
    from model.detect import SHIPPED_SCENE_MODEL

    found = _run("detect_speed.py", "--scene-model", str(SHIPPED_SCENE_MODEL), *common)
    assert found.returncode == 0, found.stderr
    for result in (drawn, found):
        assert re.search(r"long side +64 .*frames/s", result.stdout), result.stdout
