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


def test_several_workers_build_the_same_service_from_the_environment(
    monkeypatch, tiny_model_path
) -> None:
    """Each worker process builds its own app from GREEDYSIGN_*: the flags, the resolved model
    and the web folder must reach it there."""
    import uvicorn
    from fastapi.testclient import TestClient

    from app.commands.serve import _SETTING_FLAGS, WEB_DIR
    from service.app import app_from_environment

    for name in _SETTING_FLAGS:  # whatever serve writes is taken away afterwards
        monkeypatch.setenv(f"GREEDYSIGN_{name.upper()}", "placeholder")
        monkeypatch.delenv(f"GREEDYSIGN_{name.upper()}")
    monkeypatch.setenv("GREEDYSIGN_SCENES", "false")
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    argv = ["serve", "--model", str(tiny_model_path), "--workers", "2", "--max-batch-size", "3"]
    assert run_serve(parse(argv)) == 0
    [(args, kwargs)] = calls
    assert args == ("service.app:app_from_environment",)
    assert kwargs["factory"] is True and kwargs["workers"] == 2
    assert kwargs["timeout_keep_alive"] > 0  # the server's own options, as with one worker

    with TestClient(app_from_environment()) as worker:
        described = worker.get("/v1/model").json()
        assert described["file"] == tiny_model_path.name
        assert worker.app.state.settings.max_batch_size == 3
        page = worker.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert (WEB_DIR / "index.html").is_file()
