"""`greedysign serve`: run the inference service with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.commands.arguments import DEVICE_HELP, device_fault, port_number
from model.options import device_name

if TYPE_CHECKING:
    from service.settings import Settings

# Flags that override a GREEDYSIGN_* setting when given; the rest come from the environment.
_SETTING_FLAGS = (
    "model",
    "scene_model",
    "scene_long_side",
    "device",
    "max_batch_size",
    "max_wait_ms",
    "web_dir",
)
# The browser app, served at / by the service (which finds it only because it is told).
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# A real sign photo, from the repository root (the Makefile's DEMO_IMAGE), for the hint.
EXAMPLE_IMAGE = "../shared/data/ctsrd-real/images/000_0001.png"


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the HTTP/WebSocket inference service",
        description="Serve a model over HTTP. Every setting can also be given as an "
        "environment variable GREEDYSIGN_<NAME> (e.g. GREEDYSIGN_API_KEY, "
        "GREEDYSIGN_MAX_UPLOAD_BYTES, GREEDYSIGN_CORS_ORIGINS); flags win over them.",
    )
    serve.add_argument(
        "--model", help="model file or run folder (default: newest run, else the shipped model)"
    )
    serve.add_argument(
        "--scene-model",
        help="scene model file for /v1/detect and mode=scene (default: the shipped one, if any)",
    )
    serve.add_argument(
        "--scene-long-side", type=int, help="frames are resized to this longer side (px)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument(
        "--port", type=port_number, default=8000, help="TCP port to listen on (1 to 65535)"
    )
    serve.add_argument("--device", type=device_name, help=DEVICE_HELP)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes; each loads its own model copy (on one GPU, keep 1)",
    )
    serve.add_argument("--max-batch-size", type=int, help="images per inference batch")
    serve.add_argument("--max-wait-ms", type=float, help="longest wait to fill a batch")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning"),
        help="of the service's and uvicorn's log lines",
    )
    serve.set_defaults(handler=run_serve)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the flags given on the command line on top."""
    from service.settings import Settings

    overrides = {name: getattr(args, name, None) for name in _SETTING_FLAGS}
    overrides.setdefault("web_dir", None)
    if overrides["web_dir"] is None and "GREEDYSIGN_WEB_DIR" not in os.environ:
        overrides["web_dir"] = WEB_DIR
    return Settings(**{name: value for name, value in overrides.items() if value is not None})


def try_line(url: str, key_set: bool) -> str:
    """The banner's example request; with the service's API key, the header it needs (a
    placeholder: the key itself is never printed)."""
    key = " -H 'X-API-Key: <your key>'" if key_set else ""
    return f"try: curl{key} -F file=@{EXAMPLE_IMAGE} '{url}/v1/predict?mask_format=none'"


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = settings_from_args(args)
    except ValidationError as error:
        print(f"error: invalid settings\n{error}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2

    import uvicorn

    from model.checkpoint import ModelFileError
    from model.detect import SceneSegmenter
    from model.inference import Predictor
    from model.runs import resolve_model
    from service.app import scene_model_path
    from service.connections import server_options

    # Before the models are read and uvicorn starts: else a device that is not there is the
    # traceback of a failed application start-up.
    fault = device_fault(settings.device)
    if fault is not None:
        print(f"error: {fault}", file=sys.stderr)
        return 2
    try:
        model = resolve_model(settings.model)
        # Read them once here, so a file that is not a model is one line, not the traceback
        # of a failed application start-up.
        Predictor.load(model, "cpu")
        scene_model = scene_model_path(settings)
        if scene_model is not None:
            SceneSegmenter.load(scene_model, "cpu")
    except (FileNotFoundError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"model": model, "scene_model": scene_model})
    # The service's own log lines (which model, which device) beside uvicorn's.
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:  %(message)s")

    url = f"http://{args.host}:{args.port}"
    print(f"GreedySign service on {url}  (API docs: {url}/docs), model {model}")
    print(f"scene model (whole frames, /v1/detect): {scene_model or 'none'}")
    print(try_line(url, key_set=settings.api_key is not None), flush=True)
    options = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        **server_options(settings),
    }
    if args.workers == 1:
        from service.app import create_app

        uvicorn.run(create_app(settings, web_dir=settings.web_dir), **options)
        return 0
    # Worker processes build their own app from the environment: pass the flags on there.
    for name in _SETTING_FLAGS:
        value = getattr(settings, name)
        if value is not None:
            os.environ[f"GREEDYSIGN_{name.upper()}"] = str(value)
    uvicorn.run("service.app:app_from_environment", factory=True, workers=args.workers, **options)
    return 0
