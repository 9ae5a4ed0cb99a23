"""Hostile files against the CLI (issue 12): every one gets a one-line error naming the file
and the fault, and a non-zero exit; never a traceback, a hang or unbounded memory.

Cases that hung or grew without bound run in a child process with a time limit and an
address-space limit, so that a regression fails the test instead of the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from app.cli import main

pytestmark = pytest.mark.timeout(180)

REPO_ROOT = Path(__file__).resolve().parents[2]
GOOD_LINE = "good.png;40;30;5;4;35;26;3;"
GTSRB_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def plain_dataset(root: Path, lines: list[str]) -> Path:
    """A plain TSRD folder with one valid 40x30 image, `good.png`, and the given lines."""
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "images" / "good.png")
    (root / "annotations.txt").write_text("".join(line + "\n" for line in lines))
    return root


def gtsrb_dataset(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(root / "good.ppm")
    (root / "GT-00003.csv").write_text("".join(f"{line}\n" for line in [GTSRB_HEADER, *rows]))
    return root


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def run_cli(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """`greedysign ARGS` in a child process, limited to `timeout` seconds and 8 GiB of
    address space: enough to stop a runaway read (of /dev/zero, say) on a 24 GiB machine.
    Not 4 GiB: a plain `predict` reserves 4.45 GB of address space (torch's thread pools
    and allocator, most of it never touched), so under 4 GiB it failed one run in four."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit_memory,
    )


# --- data check ----------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_images_that_are_a_fifo_or_a_link_to_dev_zero_are_errors(tmp_path) -> None:
    root = plain_dataset(
        tmp_path / "set", [GOOD_LINE, "fifo.png;40;30;5;4;35;26;3;", "zero.png;40;30;5;4;35;26;3;"]
    )
    os.mkfifo(root / "images" / "fifo.png")
    (root / "images" / "zero.png").symlink_to("/dev/zero")
    done = run_cli(["data", "check", str(root)])
    assert done.returncode == 2
    assert "annotations.txt:2: image file unreadable" in one_line_error(done.stderr)
    assert "fifo.png (not a regular file: it is a FIFO)" in done.stderr
    (root / "annotations.txt").write_text(f"{GOOD_LINE}\nzero.png;40;30;5;4;35;26;3;\n")
    done = run_cli(["data", "check", str(root)])
    assert done.returncode == 2
    assert "zero.png (not a regular file: it is a character device)" in one_line_error(done.stderr)
    # The image a user asks to predict may be one too.
    done = run_cli(["predict", str(root / "images" / "fifo.png")])
    assert done.returncode != 0 and "not a regular file" in done.stdout + done.stderr


def test_a_photo_over_the_pixel_limit_is_refused_before_decoding(tmp_path) -> None:
    """12000x9000 (108 MP) of one bit a pixel: a 30 KB PNG that held gigabytes while its mask
    was drawn at full size."""
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 9000)).save(huge)
    for command in (["predict"], ["detect", "--json"]):
        done = run_cli([*command, str(huge)])
        assert done.returncode == 1, done.stderr
        assert "image is 12000x9000 = 108000000 pixels; the limit is 100000000" in done.stdout


@pytest.mark.parametrize(
    ("make", "fault"),
    [
        (lambda images: None, "embedded null byte"),
        (lambda images: (images / "bad.png").symlink_to("bad.png"), "symbolic links"),
        (lambda images: (images / "bad.png").mkdir(), "it is a directory"),
    ],
    ids=["nul byte in the name", "symlink loop", "a directory"],
)
def test_bad_image_paths_are_one_line_errors(tmp_path, capsys, make, fault) -> None:
    root = plain_dataset(tmp_path / "set", [GOOD_LINE])
    make(root / "images")
    name = "b\0ad.png" if fault == "embedded null byte" else "bad.png"
    (root / "annotations.txt").write_text(f"{GOOD_LINE}\n{name};40;30;5;4;35;26;3;\n")
    assert main(["data", "check", str(root)]) == 2
    error = one_line_error(capsys.readouterr().err)
    assert "annotations.txt:2: image file unreadable" in error and fault in error
    assert "\0" not in error


def test_an_empty_annotation_file_is_an_error(tmp_path, capsys) -> None:
    root = plain_dataset(tmp_path / "set", [])
    assert main(["data", "check", str(root)]) == 2
    assert "annotations.txt: no annotation lines" in one_line_error(capsys.readouterr().err)
    root = gtsrb_dataset(tmp_path / "gtsrb", [])
    assert main(["data", "check", str(root)]) == 2
    assert "GT-00003.csv:1: no annotation rows" in one_line_error(capsys.readouterr().err)


def test_csv_names_that_are_not_regular_files_are_left_alone(tmp_path, capsys) -> None:
    root = gtsrb_dataset(tmp_path / "gtsrb", ["good.ppm;40;30;5;4;35;26;3"])
    (root / "folder.csv").mkdir()
    (root / "loop.csv").symlink_to("loop.csv")
    (root / "dangling.csv").symlink_to("absent.csv")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "fifo.csv")
    assert main(["data", "check", str(root), "--json"]) == 0
    assert '"records": 1' in capsys.readouterr().out


def test_skipping_bad_records_is_said_in_the_exit_code(tmp_path, capsys) -> None:
    root = plain_dataset(tmp_path / "set", [GOOD_LINE, "absent.png;40;30;5;4;35;26;3;"])
    assert main(["data", "check", str(root), "--on-error", "skip"]) == 1
    assert "errors      1" in capsys.readouterr().out


# --- a model file that is not a model ------------------------------------------------------


def not_models(folder: Path) -> list[Path]:
    folder.mkdir()
    files = {
        "empty.pt": b"",
        "text.pt": b"just some text\n",
        "noise.pt": os.urandom(4096),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    torch.save([1, 2, 3], folder / "list.pt")
    torch.save({"format": "greedysign-model/1", "model": {}}, folder / "half.pt")
    torch.save({"weights": torch.zeros(3)}, folder / "foreign.pt")
    return sorted(folder.iterdir())


@pytest.mark.parametrize("command", ["predict", "eval", "serve"])
def test_a_file_that_is_not_a_model_is_a_one_line_error(tmp_path, capsys, command) -> None:
    image = tmp_path / "sign.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    for model in not_models(tmp_path / "models"):
        args = {
            "predict": ["predict", "--model", str(model), str(image)],
            "eval": ["eval", "--model", str(model), "--data", str(tmp_path)],
            "serve": ["serve", "--model", str(model), "--port", "1"],
        }[command]
        assert main(args) == 2, model
        error = one_line_error(capsys.readouterr().err)
        assert str(model) in error and "not a GreedySign model" in error


def test_predict_refuses_top_k_below_one(tmp_path, capsys) -> None:
    for value in ("0", "-3", "many"):
        with pytest.raises(SystemExit) as exited:
            main(["predict", "--top-k", value, str(tmp_path / "sign.png")])
        assert exited.value.code == 2
        assert "--top-k" in capsys.readouterr().err


# --- generators and preview: what they write, and where ------------------------------------


GENERATORS = {
    "synth": ["data", "synth", "--per-class", "1"],
    "scenes": ["data", "scenes", "--frames", "1", "--width", "64", "--height", "48"],
    "drives": ["data", "drives", "--drives", "1", "--frames-per-drive", "2"],
}


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_generators_refuse_a_folder_that_holds_a_dataset_or_a_file(
    tmp_path, capsys, generator
) -> None:
    # A generator wrote its annotation file over the one there: the real images it listed
    # were left in place, unlisted.
    tsrd = plain_dataset(tmp_path / "tsrd", [GOOD_LINE])
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "annotations.json").write_text('{"images": [], "annotations": []}')
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    annotation_files = (tsrd / "annotations.txt", coco / "annotations.json")
    kept = {path: path.read_bytes() for path in annotation_files}
    command = GENERATORS[generator]
    refused = {
        tsrd: "holds a dataset already (annotations.txt)",
        coco: "holds a dataset already (annotations.json)",
        a_file: "a-file: not a folder",
    }
    for out, fault in refused.items():
        # An empty data root: scenes and drives draw on procedural textures, quickly.
        extra = [] if generator == "synth" else ["--data-root", str(tmp_path / "no-data")]
        assert main([*command[:2], str(out), *command[2:], *extra]) == 2
        assert fault in one_line_error(capsys.readouterr().err)
    assert {path: path.read_bytes() for path in kept} == kept
    assert sorted(path.name for path in coco.iterdir()) == ["annotations.json"]


def test_synth_refuses_fewer_than_one_image_per_class(tmp_path, capsys) -> None:
    for value in ("0", "-1"):
        with pytest.raises(SystemExit) as exited:
            main(["data", "synth", str(tmp_path / "set"), "--per-class", value])
        assert exited.value.code == 2
        assert "--per-class" in capsys.readouterr().err


def test_preview_refuses_sizes_below_one_and_an_out_it_cannot_write(tmp_path, capsys) -> None:
    root = plain_dataset(tmp_path / "set", [GOOD_LINE])
    for option in ("--count", "--image-size"):
        with pytest.raises(SystemExit) as exited:
            main(["data", "preview", str(root), option, "0"])
        assert exited.value.code == 2
        assert option in capsys.readouterr().err
    (tmp_path / "folder.png").mkdir()
    refused = {
        tmp_path / "preview.txt": "not an image file name",
        tmp_path / "folder.png": "is a folder",
        tmp_path / "set" / "annotations.txt" / "preview.png": "annotations.txt",
    }
    for out, fault in refused.items():
        argv = ["data", "preview", str(root), "--out", str(out), "--count", "1"]
        assert main([*argv, "--image-size", "16", "--no-augment"]) == 2
        assert fault in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "preview.txt").exists()
