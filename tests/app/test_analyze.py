"""`greedysign analyze` as a user runs it: the JSON shape, figures, and a run with snapshots."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli import main
from model.network import NetConfig, SignNet
from model.snapshots import save_snapshot


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    assert main(["data", "synth", str(root), "--per-class", "1", "--seed", "5"]) == 0
    return root


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def _square(matrix: list[list[float]], size: int) -> bool:
    return len(matrix) == size and all(len(row) == size for row in matrix)


def test_analyze_prints_one_json_object(tiny_model_path, synthetic, capsys, tmp_path):
    capsys.readouterr()
    args = ["analyze", "--model", str(tiny_model_path), "--data", str(synthetic), "--json"]
    assert main([*args, "--probe-images", "32", "--out", str(tmp_path)]) == 0
    result = _json(capsys)
    L = len(result["layers"])
    assert result["layers"] == ["stem", "layer1", "layer2+layer3", "layer4"]
    assert _square(result["cross_mi"], L)
    assert all(
        result["cross_mi"][i][j] == result["cross_mi"][j][i] for i in range(L) for j in range(L)
    )
    for key in ("entropy", "mi_input", "mi_label"):
        assert len(result[key]) == L and all(isinstance(v, float) for v in result[key])
    # What a layer shares with the input or the label is at most what it holds, and the label
    # (32 images) holds at most log2(32) bits.
    for entropy, mi_input, mi_label in zip(
        result["entropy"], result["mi_input"], result["mi_label"], strict=True
    ):
        assert entropy > 0 and 0 <= mi_input <= entropy + 1e-6
        assert 0 <= mi_label <= min(entropy, 5.0) + 1e-6
    assert [result["cross_mi"][i][i] for i in range(L)] == result["entropy"]
    assert result["alpha"] == 1.01
    # per_class=1 holds nothing out: the probe falls back to every distinct image, capped.
    assert result["probe_images"] == 32 and result["subset"] == "all"
    for name in ("analysis.json", "cross_mi.png", "information_plane.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "analysis.json").read_text()) == result


def test_analyze_blocks_as_a_table(tiny_model_path, synthetic, capsys):
    capsys.readouterr()
    args = ["analyze", "--model", str(tiny_model_path), "--data", str(synthetic)]
    assert main([*args, "--units", "blocks", "--probe-images", "16"]) == 0
    out = capsys.readouterr().out
    assert "I(T_i; T_j) in bits" in out and "T9 layer4.1" in out and "information plane" in out


def test_analyze_run_with_snapshots(synthetic, tmp_path, capsys):
    torch.manual_seed(0)
    model = SignNet(NetConfig(image_size=32))
    run = tmp_path / "run"
    save_snapshot(model, run, "sgd", 1, 1)
    with torch.no_grad():
        for p in model.stages.parameters():
            p.mul_(1.5)
    save_snapshot(model, run, "sgd", 2, 2)
    capsys.readouterr()
    args = ["analyze", str(run), "--data", str(synthetic), "--json", "--probe-images", "16"]
    assert main(args) == 0
    convergence = _json(capsys)["convergence"]
    assert convergence["training"] == "end-to-end" and convergence["global_epochs"] == [1, 2]
    assert len(convergence["mi_to_final"]) == 4 and len(convergence["mi_to_final"][0]) == 2
    assert (run / "analysis" / "convergence.png").is_file()
    assert (run / "analysis" / "information_plane_trajectories.png").is_file()


def test_analyze_errors_exit_2_with_a_reason(tiny_model_path, tmp_path, capsys):
    assert main(["analyze", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "no snapshots" in capsys.readouterr().err
    # A folder that is not there is no run, not a run without snapshots.
    assert main(["analyze", str(tmp_path / "nosuch")]) == 2
    error = capsys.readouterr().err
    assert f"error: {tmp_path / 'nosuch'}: no such run folder" in error and "snapshots" not in error
    assert main(["analyze", str(tiny_model_path)]) == 2
    assert "is a file, not a run folder (give a model file with --model)" in (
        capsys.readouterr().err
    )
    assert main(["analyze", "--model", str(tiny_model_path)]) == 2
    assert "--data" in capsys.readouterr().err


def test_a_negative_pool_size_is_an_argument_error(capsys) -> None:
    """It was a traceback from adaptive_avg_pool2d."""
    with pytest.raises(SystemExit) as stopped:
        main(["analyze", "--model", "none.pt", "--data", "none", "--pool-to", "-1"])
    assert stopped.value.code == 2 and "--pool-to: must be at least 0" in capsys.readouterr().err


@pytest.mark.parametrize("alpha", ["nan", "inf", "1", "0", "-2", "two"])
def test_an_alpha_the_estimator_does_not_take_is_an_argument_error(alpha, capsys) -> None:
    """NaN made a table of NaN and exit 0; the others failed after the model had loaded."""
    with pytest.raises(SystemExit) as stopped:
        main(["analyze", "--model", "none.pt", "--data", "none", "--alpha", alpha])
    assert stopped.value.code == 2 and "argument --alpha: " in capsys.readouterr().err


def test_a_bad_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch) -> None:
    """It was a FileExistsError or FileNotFoundError traceback once the analysis was done."""

    def analysis(*args, **kwargs):
        raise AssertionError("the analysis ran before --out was checked")

    monkeypatch.setattr("model.analysis.analyze_model_file", analysis)
    a_file = tmp_path / "good.png"
    a_file.write_bytes(b"")
    for out, fault in (
        (a_file, "is a file; the report goes in a folder (--out FOLDER)"),
        (a_file / "report", f"cannot write the report there ({a_file} is a file, not a folder)"),
    ):
        assert main(["analyze", "--model", "m.pt", "--data", "d", "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"error: {out}: {fault}\n"


def test_a_report_that_fails_to_write_is_an_error_after_the_numbers(
    tiny_model_path, synthetic, tmp_path, capsys, monkeypatch
) -> None:
    """It was the OSError's traceback, and the numbers were lost with it."""

    def full_disk(out, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("model.analysis.write_report", full_disk)
    # --out names a folder, whatever its name; it is made when the report is written.
    out = tmp_path / "report.json"
    capsys.readouterr()
    args = ["analyze", "--model", str(tiny_model_path), "--data", str(synthetic), "--json"]
    assert main([*args, "--probe-images", "16", "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert len(json.loads(printed.out)["layers"]) == 4
    assert (
        printed.err == f"error: writing the report in {out}: [Errno 28] No space left on device\n"
    )


def test_a_damaged_snapshot_is_an_error_naming_it(synthetic, tmp_path, capsys) -> None:
    """It was torch.load's UnpicklingError (EOFError for an empty file) as a traceback."""
    model = SignNet(NetConfig(image_size=32))
    run = tmp_path / "run"
    damaged = save_snapshot(model, run, "sgd", 1, 1)
    save_snapshot(model, run, "sgd", 2, 2)
    damaged.write_bytes(bytes(range(256)) * 4)
    capsys.readouterr()
    assert main(["analyze", str(run), "--data", str(synthetic), "--probe-images", "16"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {damaged}: not a GreedySign encoder snapshot")
    assert error.count("\n") == 1
