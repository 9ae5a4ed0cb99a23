"""The `greedysign` command as a user runs it (in-process, through app.cli.main)."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import data.images as images_module
from app.cli import build_parser, main
from app.commands import predict
from data.load import load_dataset
from model.inference import Predictor

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    assert main(["data", "synth", str(root), "--per-class", "1", "--seed", "5"]) == 0
    return root


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_every_option_and_argument_says_what_it_is():
    def undocumented(parser: argparse.ArgumentParser, command: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, subparser in action.choices.items():
                    yield from undocumented(subparser, f"{command} {name}")
            elif not action.help:
                yield f"{command} {'/'.join(action.option_strings) or action.dest}"

    assert list(undocumented(build_parser(), "greedysign")) == []


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["train"], "peak learning rate, reached after the warm-up (default: 0.003)"),
        (["data", "preview"], "PNG to write (default: preview.png)"),
    ],
)
def test_help_shows_the_defaults(command, shown, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert shown in help_text
    # Nothing to show for a flag or an option without a default.
    assert "(default: False)" not in help_text and "(default: None)" not in help_text


def test_data_check_on_real_ctsrd(ctsrd_real, capsys):
    assert main(["data", "check", str(ctsrd_real), "--json"]) == 0
    report = _json(capsys)
    assert (report["records"], report["classes"], report["errors"]) == (1191, 55, 0)
    assert report["duplicate_groups"] == [] and report["cross_split"] == []


def test_synthetic_set_checks_clean(synthetic, capsys):
    capsys.readouterr()
    assert main(["data", "check", str(synthetic), "--json"]) == 0
    report = _json(capsys)
    assert (report["records"], report["classes"], report["errors"]) == (58, 58, 0)


def test_bad_annotation_exits_2_naming_file_and_line(synthetic, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "images").symlink_to(synthetic / "images")
    lines = (synthetic / "annotations.txt").read_text().splitlines()
    lines[2] = lines[2].replace(";", ";x", 1)  # width is no longer an integer
    (broken / "annotations.txt").write_text("\n".join(lines) + "\n")
    assert main(["data", "check", str(broken)]) == 2
    assert "annotations.txt:3: width is not an integer" in capsys.readouterr().err
    assert main(["data", "check", str(broken), "--on-error", "skip", "--json"]) == 1
    assert _json(capsys)["records"] == 57


def test_split_frames_on_the_dfg_frames(dfg_frames, tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["data", "split-frames", str(dfg_frames), str(out), "--test-share", "0.28"]) == 0
    assert "wrote 25 training frames" in capsys.readouterr().out
    test = json.loads((out / "test" / "annotations.json").read_text())
    assert [image["file_name"] for image in test["images"]][0] == "0000175.jpg"
    assert main(["data", "split-frames", str(tmp_path / "none"), str(out)]) == 2
    assert "error:" in capsys.readouterr().err


def test_split_gtsrb_keeps_each_track_on_one_side(gtsrb_real, tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["data", "split-gtsrb", str(gtsrb_real), str(out)]) == 0
    assert "wrote 199 training images" in capsys.readouterr().out
    track = {
        row["filename"]: row["track_key"]
        for row in csv.DictReader((gtsrb_real / "provenance.csv").open())
    }
    sides = {}
    for side in ("train", "test"):
        index = load_dataset(out / side)  # each side reads as a GTSRB folder
        sides[side] = {track[record.image_path.name] for record in index.records}
    assert len(sides["train"]) + len(sides["test"]) == len(set(track.values()))
    assert not sides["train"] & sides["test"]
    assert main(["data", "split-gtsrb", str(tmp_path / "none"), str(out)]) == 2
    assert "error:" in capsys.readouterr().err


def test_split_gtsrb_refuses_bad_rows_and_an_empty_side(gtsrb_real, tmp_path, capsys):
    """A row the GTSRB loader refuses stops the split, naming its line, instead of going to a
    side whose every read then fails; so does a --test-every that leaves a side empty."""
    rows = (gtsrb_real / "annotations.csv").read_text().splitlines()[:20]
    fields = rows[7].split(";")
    wrong_class = ";".join([*fields[:-1], "77"])
    faults = [
        ([*rows[:4], "junk;;", *rows[4:]], "annotations.csv:5: too few fields"),
        ([*rows[:7], wrong_class, *rows[8:]], "annotations.csv:8: class 77 out of range"),
    ]
    for number, (lines, fault) in enumerate(faults):
        source = tmp_path / f"bad{number}"
        source.mkdir()
        (source / "images").symlink_to(gtsrb_real / "images")
        (source / "annotations.csv").write_text("\n".join(lines) + "\n")
        out = tmp_path / f"split{number}"
        assert main(["data", "split-gtsrb", str(source), str(out)]) == 2
        assert fault in capsys.readouterr().err and not out.exists()
    (tmp_path / "bad0" / "annotations.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "split"
    assert (
        main(["data", "split-gtsrb", str(tmp_path / "bad0"), str(out), "--test-every", "1000"]) == 2
    )
    assert "19 tracks leave the test side empty" in capsys.readouterr().err
    assert not out.exists()


def test_predict_prints_one_json_line_per_image(tiny_model_path, synthetic, capsys):
    images = sorted((synthetic / "images").iterdir())[:2]
    assert (
        main(["predict", "--model", str(tiny_model_path), "--mask", "rle", *map(str, images)]) == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    for line in lines:
        assert line["kind"] in {"sign", "unknown_sign", "no_sign"} and len(line["top_k"]) == 5
        assert set(line["top_k"][0]) == {"class_id", "class_name", "confidence"}  # as the API
        if line["kind"] == "sign":
            assert 0 <= line["class_id"] < 58
        else:
            assert line["class_id"] is None and line["class_name"] in {"unknown sign", "no sign"}
        assert line["mask"]["format"] == "rle" and line["mask"]["size"] == line["image_size"]
        assert sum(line["mask"]["data"]) == line["mask"]["size"][0] * line["mask"]["size"][1]


def test_predict_reads_every_image_of_a_folder_by_name(
    tiny_model_path, synthetic, tmp_path, capsys
):
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted((synthetic / "images").iterdir())[:3]
    for name, source in zip(("b.png", "a.PNG", "c.png"), sources, strict=True):
        (folder / name).write_bytes(source.read_bytes())
    (folder / "notes.txt").write_text("not a photo")
    (folder / "._b.png").write_bytes(b"a Mac's resource fork, not a photo")  # hidden: not read
    (folder / "nested").mkdir()  # not read: only the folder's own files
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["predict", "--model", str(tiny_model_path), str(folder), str(sources[0]), str(empty)]
    assert main(argv) == 1  # the empty folder is an error that names it
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    named = [folder / "a.PNG", folder / "b.png", folder / "c.png", sources[0], empty]
    assert [line["image"] for line in lines] == [str(path) for path in named]
    assert all("kind" in line for line in lines[:4])
    assert lines[4]["error"] == f"{empty}: a folder with no image in it (subfolders are not read)"


def test_predict_reads_photos_in_runs_and_keeps_their_order(
    tiny_model_path, synthetic, tmp_path, capsys, monkeypatch
):
    """Photos are read in batches; a file that is no photo answers in its place, and the
    answers are those of each photo read alone."""
    images = [str(p) for p in sorted((synthetic / "images").iterdir())[:5]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    asked = [*images[:2], str(broken), *images[2:]]
    model = ["--model", str(tiny_model_path)]
    batches = []
    read_images = Predictor.read_images
    monkeypatch.setattr(
        Predictor,
        "read_images",
        lambda self, images, **kw: batches.append(len(images)) or read_images(self, images, **kw),
    )
    assert main(["predict", *model, *asked]) == 1
    batched = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert batches == [5]  # one run: the broken file holds no place in the batch
    monkeypatch.setattr(predict, "RUN_IMAGES", 2)
    assert main(["predict", *model, *asked]) == 1
    assert batches[1:] == [2, 1, 2]  # runs of two files: the second holds the broken one
    capsys.readouterr()
    # A run is sized from the headers: no photo of the next run is decoded before it is read.
    events = []
    decode = images_module.read_rgb
    monkeypatch.setattr(
        images_module,
        "read_rgb",
        lambda path, **kw: events.append(Path(path).name) or decode(path, **kw),
    )
    monkeypatch.setattr(
        Predictor,
        "read_images",
        lambda self, images, **kw: events.append(len(images)) or read_images(self, images, **kw),
    )
    assert main(["predict", *model, *images[:3]]) == 0
    names = [Path(image).name for image in images[:3]]
    assert events == [names[0], names[1], 2, names[2], 1]
    capsys.readouterr()
    monkeypatch.setattr(predict, "RUN_IMAGES", 1)
    assert main(["predict", *model, *asked]) == 1
    alone = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in batched] == asked
    assert "error" in batched[2] and "error" not in batched[3]
    for one, other in zip(batched, alone, strict=True):
        assert one.keys() == other.keys() and one.get("box") == other.get("box")
        assert one.get("class_id") == other.get("class_id")
        assert one.get("confidence", 0) == pytest.approx(other.get("confidence", 0), abs=1e-3)


def test_eval_prints_the_metrics(tiny_model_path, synthetic, capsys):
    assert (
        main(["eval", "--model", str(tiny_model_path), "--data", str(synthetic), "--subset", "all"])
        == 0
    )
    metrics = _json(capsys)
    assert metrics["images"] == 58
    for key in ("accuracy", "macro_accuracy", "mask_miou", "mask_iou", "box_iou"):
        assert 0.0 <= metrics[key] <= 1.0


def test_eval_on_crops_scores_known_signs_and_rejections(tiny_model_path, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "classes.csv").write_text("code,name,ctsrd_class_id\npl40,Speed limit 40,3\n")
    crops = (("pl40", "1_0.png"), ("pl40", "2_1.png"), ("pl100", "3_2.png"))
    for shade, (folder, name) in enumerate(crops):
        (tmp_path / folder).mkdir(exist_ok=True)  # distinct pixels: eval reads each content once
        Image.new("RGB", (30, 34), (200, 30 + 40 * shade, 30)).save(tmp_path / folder / name)
    (tmp_path / "negative").mkdir()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(tmp_path / "negative" / "4.jpg")
    args = ["eval", "--model", str(tiny_model_path), "--data", str(tmp_path), "--subset", "all"]
    assert main([*args, "--per-class"]) == 0
    metrics = _json(capsys)
    assert (metrics["images"], metrics["known_images"], metrics["open_set_images"]) == (4, 2, 2)
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["rejection_rate"] <= 1
    assert metrics["box_iou"] is metrics["mask_miou"] is None  # crops have no box
    assert set(metrics["per_class"]) <= {"3"}


def test_eval_warns_of_a_folder_without_test_images(tiny_model_path, synthetic, tmp_path, capsys):
    from model.checkpoint import export_model, load_model

    # A model that held out the synthetic set's images, and a second set that it never split.
    network, info = load_model(tiny_model_path)
    held_out = [record.sha1 for record in load_dataset(synthetic).records]
    model = export_model(
        network, dataclasses.replace(info, split={"test_sha1": held_out}), tmp_path / "model.pt"
    )
    other = tmp_path / "other"
    assert main(["data", "synth", str(other), "--per-class", "1", "--seed", "6"]) == 0
    capsys.readouterr()
    args = ["eval", "--model", str(model), "--data", str(synthetic), "--data", str(other)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"] == 58
    assert f"warning: no test images of {model} in {other}" in captured.err
    assert str(synthetic) not in captured.err
    # No folder covered at all stays an error, which says what to do about it.
    assert main(["eval", "--model", str(model), "--data", str(other)]) == 2
    error = capsys.readouterr().err
    assert f"error: no test images of {model} in {other}" in error
    assert "--subset all scores every image given" in error


def test_eval_refuses_a_dataset_of_other_classes(tiny_model_path, gtsrb_real, capsys):
    args = ["eval", "--model", str(tiny_model_path), "--data", str(gtsrb_real), "--subset", "all"]
    assert main(args) == 2
    assert "GTSRB's but" in capsys.readouterr().err


def test_a_scene_model_is_no_sign_model_to_predict_or_detect(
    empty_scene_model_path, synthetic, capsys
):
    image = str(sorted((synthetic / "images").iterdir())[0])
    scene = str(empty_scene_model_path)
    assert main(["predict", "--model", scene, image]) == 2
    assert "not a sign model" in capsys.readouterr().err
    assert main(["detect", "--model", scene, "--scene-model", scene, image]) == 2
    assert "not a sign model" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    assert "no model at" in capsys.readouterr().err


def test_train_refuses_a_set_too_small_to_split(synthetic, tmp_path, capsys):
    assert main(["train", "--data", str(synthetic), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "0 test images" in error


def test_train_stopped_after_a_module_resumes_to_a_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GREEDYSIGN_RUNS", str(tmp_path))
    data, out = tmp_path / "data", tmp_path / "run"
    assert main(["data", "synth", str(data), "--per-class", "2", "--seed", "1"]) == 0
    flags = ["--data", str(data), "--out", str(out), "--image-size", "32", "--epochs", "1",
             "--batch-size", "16", "--workers", "0"]  # fmt: skip
    assert main(["train", *flags, "--stop-after", "module1"]) == 0
    assert (out / "checkpoint.pth").is_file() and not (out / "model.pt").exists()
    image = str(sorted((data / "images").iterdir())[0])
    assert main(["predict", "--model", str(out), image]) == 2
    assert "the run has not finished" in capsys.readouterr().err
    # Other epochs would resume at the wrong phase: refused as other CLI errors are.
    assert main(["train", *flags, "--epochs", "2", "--resume"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "resume with the run's own arguments" in error
    # The checkpoint the CLI wrote must read back (weights_only) for --resume.
    assert main(["train", *flags, "--resume"]) == 0
    assert (out / "model.pt").is_file()


def test_eval_of_a_file_says_it_is_a_file(tiny_model_path, tmp_path, capsys):
    a_file = tmp_path / "README.md"
    a_file.write_text("# not a dataset\n")
    assert main(["eval", "--model", str(tiny_model_path), "--data", str(a_file)]) == 2
    assert f"{a_file}: is a file, not a dataset folder" in capsys.readouterr().err


def test_the_license_is_an_spdx_expression():
    # The TOML table form ({ text = "MIT" }) made every install print setuptools' deprecation.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in project["project"].get("classifiers", []))


def test_the_official_sample_script_shows_its_whole_description():
    script = REPO_ROOT / "bench" / "tsrd_official_sample.py"
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=True
    )
    help_text = " ".join(done.stdout.split())
    # It stopped at "...so that the", the end of the docstring's first line.
    assert "so that the paper's protocol (`greedysign train --split official`) can be run" in (
        help_text
    )
