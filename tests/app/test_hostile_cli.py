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


def test_a_photo_over_the_pixel_limit_is_refused_before_decoding(tmp_path, capsys) -> None:
    """12000x9000 (108 MP) of one bit a pixel: a 30 KB PNG that held gigabytes while its mask
    was drawn at full size."""
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 9000)).save(huge)
    for command in (["predict"], ["detect", "--json"]):
        assert main([*command, str(huge)]) == 1
        answer = capsys.readouterr().out
        assert "image is 12000x9000 = 108000000 pixels; the limit is 100000000" in answer


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


def test_a_file_given_as_a_dataset_folder_is_said_to_be_a_file(tmp_path, capsys) -> None:
    a_file = tmp_path / "README.md"
    a_file.write_text("# not a dataset\n")
    assert main(["data", "check", str(a_file)]) == 2
    assert f"{a_file}: is a file, not a dataset folder" in one_line_error(capsys.readouterr().err)
    assert main(["data", "check", str(tmp_path / "absent")]) == 2
    assert "no such dataset folder" in one_line_error(capsys.readouterr().err)


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


def test_torchs_loading_advice_stays_out_of_the_error_line(tmp_path, capsys) -> None:
    image = tmp_path / "sign.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    readme = tmp_path / "README.md"
    readme.write_text("# GreedySign\n\nTraffic-sign recognition.\n")
    pickled_module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled_module)  # a whole pickled module, not weights
    for model, gist in ((readme, "Unsupported operand"), (pickled_module, "Linear")):
        assert main(["predict", "--model", str(model), str(image)]) == 2
        error = one_line_error(capsys.readouterr().err)
        assert error.startswith(f"error: {model}: not a GreedySign model file this version can")
        fault = error.removeprefix(f"error: {model}")  # the path may hold any word
        assert gist in fault and "weights_only" not in fault and len(fault) < 200, error


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
        (tmp_path / "no-data").mkdir(exist_ok=True)
        extra = [] if generator == "synth" else ["--data-root", str(tmp_path / "no-data")]
        assert main([*command[:2], str(out), *command[2:], *extra]) == 2
        assert fault in one_line_error(capsys.readouterr().err)
    assert {path: path.read_bytes() for path in kept} == kept
    assert sorted(path.name for path in coco.iterdir()) == ["annotations.json"]


@pytest.mark.parametrize("generator", ["scenes", "drives"])
def test_generators_refuse_a_data_root_that_is_not_a_folder(tmp_path, capsys, generator) -> None:
    # It drew on procedural textures alone, silently, as if the data were not there.
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    out = tmp_path / "out"
    for root, fault in ((tmp_path / "nonexistent", "no such folder"), (a_file, "not a folder")):
        command = GENERATORS[generator]
        assert main([*command[:2], str(out), *command[2:], "--data-root", str(root)]) == 2
        assert f"--data-root {root}: {fault}" in one_line_error(capsys.readouterr().err)
    assert not out.exists()


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


# --- devices, ports and run folders --------------------------------------------------------

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
DEVICE_COMMANDS = {
    "predict": lambda model, image: ["predict", "--model", model, image],
    "eval": lambda model, image: ["eval", "--model", model, "--data", str(Path(image).parent)],
    "detect": lambda model, image: ["detect", "--model", model, "--scene-model", model, image],
    "analyze": lambda model, image: ["analyze", "--model", model, "--data", image],
    "train": lambda model, image: ["train", "--data", str(Path(image).parent), "--epochs", "1"],
    "serve": lambda model, image: ["serve", "--model", model],
}


@pytest.fixture
def not_served(monkeypatch) -> list[dict]:
    """uvicorn.run replaced by a recorder: a serve test that gets that far ends at once."""
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setenv("GREEDYSIGN_SCENES", "false")  # no shipped scene model to read
    monkeypatch.delenv("GREEDYSIGN_API_KEY", raising=False)
    return calls


@pytest.mark.parametrize("command", sorted(DEVICE_COMMANDS))
def test_a_malformed_device_is_refused_before_any_work(tmp_path, capsys, command) -> None:
    # It was torch's traceback ("Expected one of cpu, cuda, ipu, ...") once a model loaded.
    argv = DEVICE_COMMANDS[command](str(tmp_path / "model.pt"), str(tmp_path / "sign.png"))
    for device in ("bogus", "cuda:x", "tpu"):
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--device", device])
        assert exited.value.code == 2
        error = capsys.readouterr().err
        assert f"argument --device: '{device}': a device must be auto" in error
        assert "Traceback" not in error


def test_device_names_that_resolve_are_taken() -> None:
    from app.cli import build_parser

    for device, parsed in (
        ("auto", "auto"),
        ("cpu", "cpu"),
        ("cuda", "cuda"),
        ("CUDA:1", "cuda:1"),
    ):
        for argv in (["predict", "x.png"], ["eval", "--data", "x"], ["train"], ["serve"]):
            assert build_parser().parse_args([*argv, "--device", device]).device == parsed


@NO_CUDA
@pytest.mark.parametrize("command", sorted(DEVICE_COMMANDS))
def test_cuda_asked_for_without_a_gpu_is_a_one_line_error(
    tiny_model_path, tmp_path, capsys, command
) -> None:
    image = tmp_path / "sign.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    argv = DEVICE_COMMANDS[command](str(tiny_model_path), str(image))
    assert main([*argv, "--device", "cuda"]) == 2
    error = one_line_error(capsys.readouterr().err)
    assert "device 'cuda' asked for, but no CUDA device is available" in error


@NO_CUDA
def test_serve_checks_the_device_before_it_starts(
    tiny_model_path, not_served, monkeypatch, capsys
) -> None:
    # It printed the banner, then a traceback and "Application startup failed".
    assert main(["serve", "--model", str(tiny_model_path), "--device", "cuda"]) == 2
    assert "no CUDA device is available" in one_line_error(capsys.readouterr().err)
    monkeypatch.setenv("GREEDYSIGN_DEVICE", "cuda:0")  # the environment's device too
    assert main(["serve", "--model", str(tiny_model_path)]) == 2
    assert "no CUDA device is available" in one_line_error(capsys.readouterr().err)
    assert not_served == []


def test_serve_takes_only_a_tcp_port(not_served, capsys) -> None:
    # 99999 was taken, and the OS bound 99999 - 65536 = 34463.
    for port in ("99999", "65536", "0", "-1", "http"):
        with pytest.raises(SystemExit) as exited:
            main(["serve", "--port", port])
        assert exited.value.code == 2
        assert "argument --port" in capsys.readouterr().err


def test_the_banners_curl_carries_the_key_header_not_the_key(
    tiny_model_path, not_served, monkeypatch, capsys
) -> None:
    argv = ["serve", "--model", str(tiny_model_path), "--device", "cpu", "--port", "65535"]
    assert main(argv) == 0 and not_served[-1]["port"] == 65535
    (curl,) = [line for line in capsys.readouterr().out.splitlines() if "curl" in line]
    assert "X-API-Key" not in curl
    monkeypatch.setenv("GREEDYSIGN_API_KEY", "s3cret-key")
    assert main(argv) == 0
    out = capsys.readouterr().out
    (curl,) = [line for line in out.splitlines() if "curl" in line]
    assert curl.startswith("try: curl -H 'X-API-Key: <your key>' -F file=@")
    assert "s3cret-key" not in out


def test_an_unfinished_run_says_how_to_finish_it(tmp_path, capsys) -> None:
    run = tmp_path / "runs" / "greedy-dib-seed0-20250101-120000"
    run.mkdir(parents=True)
    (run / "checkpoint.pth").write_bytes(b"the last epoch's state")
    image = tmp_path / "sign.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    for argv in (["predict", "--model", str(run), str(image)],
                 ["eval", "--model", str(run), "--data", str(tmp_path)]):  # fmt: skip
        assert main(argv) == 2
        error = one_line_error(capsys.readouterr().err)
        assert f"{run}: the run has not finished" in error
        assert f"greedysign train --out {run} --resume" in error
    # A folder with neither file is still no model.
    assert main(["predict", "--model", str(tmp_path), str(image)]) == 2
    assert "no model at" in one_line_error(capsys.readouterr().err)


def test_ctrl_c_is_one_line_and_the_shells_code(tmp_path, capsys, monkeypatch) -> None:
    from app.commands import data as data_commands

    def stopped(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_commands, "run_check", stopped)
    assert main(["data", "check", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_eval_refuses_a_scene_model(whole_frame_scene_model_path, tmp_path, capsys) -> None:
    # It said the model records no held-out images; with --subset all it scored 0.0 accuracy.
    data = plain_dataset(tmp_path / "data", [GOOD_LINE])
    for subset in ("test", "all"):
        argv = ["eval", "--model", str(whole_frame_scene_model_path), "--data", str(data)]
        assert main([*argv, "--subset", subset, "--device", "cpu"]) == 2
        assert "not a sign model" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--lr", "nan"),
        ("--lr", "0"),
        ("--lr", "-1"),
        ("--momentum", "-1"),
        ("--momentum", "1"),
        ("--weight-decay", "-1"),
        ("--label-smoothing", "2"),
        ("--beta", "nan"),
        ("--lambda-mask", "nan"),
        ("--lambda-recon", "inf"),
        ("--warmup-epochs", "-1"),
        ("--alpha", "1"),
        ("--alpha", "-2"),
    ],
)
def test_train_refuses_numbers_it_cannot_learn_with(tmp_path, capsys, flag, value) -> None:
    """Each was a torch traceback after the data had loaded, or (NaN weights) a run of NaN
    losses that still said it was written."""
    with pytest.raises(SystemExit) as exited:
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), flag, value])
    assert exited.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_refuses_an_out_it_cannot_make_before_loading_data(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    started = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", "--data", str(tmp_path / "no-data")]
        + ["--out", str(blocker / "run"), "--device", "cpu"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode != 0 and "Traceback" not in started.stderr
    assert f"--out {blocker / 'run'}: {blocker} is a file, not a folder" in started.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["a-file"]  # nothing made
    # The default run folder too: runs/ under a file, refused before the data is read.
    started = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", "--data", str(tmp_path / "no-data")],
        cwd=REPO_ROOT,
        env={**os.environ, "GREEDYSIGN_RUNS": str(blocker / "runs")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode != 0 and "Traceback" not in started.stderr
    assert f"{blocker} is a file, not a folder" in started.stderr
