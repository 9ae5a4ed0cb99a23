"""`greedysign serve` argument handling (app/commands/serve.py): flags over environment."""

from __future__ import annotations

import argparse

from app.commands.serve import register, run_serve, settings_from_args


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="greedysign")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_defaults_bind_loopback_with_settings_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GREEDYSIGN_MAX_BATCH_SIZE", "8")
    args = parse(["serve"])
    assert (args.host, args.port, args.workers) == ("127.0.0.1", 8000, 1)
    settings = settings_from_args(args)
    assert settings.model is None and settings.device == "auto"
    assert settings.max_batch_size == 8


def test_flags_override_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GREEDYSIGN_DEVICE", "cuda")
    args = parse(["serve", "--model", str(tmp_path), "--device", "cpu", "--max-wait-ms", "3"])
    settings = settings_from_args(args)
    assert settings.model == tmp_path and settings.device == "cpu"
    assert settings.max_wait_ms == 3


def test_invalid_settings_exit_with_a_message(capsys) -> None:
    assert run_serve(parse(["serve", "--max-batch-size", "0"])) == 2
    assert "max_batch_size" in capsys.readouterr().err


def test_a_missing_model_exits_with_a_message(capsys, tmp_path) -> None:
    assert run_serve(parse(["serve", "--model", str(tmp_path / "absent.pt")])) == 2
    assert "no model at" in capsys.readouterr().err


def test_a_scene_model_in_place_of_the_sign_model_exits_with_a_message(
    capsys, empty_scene_model_path
) -> None:
    assert run_serve(parse(["serve", "--model", str(empty_scene_model_path)])) == 2
    assert "not a sign model" in capsys.readouterr().err
