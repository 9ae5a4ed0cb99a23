"""`greedysign predict IMAGE...`: one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from app.commands.arguments import DEVICE_HELP, device_fault, folders_opened
from data.records import DataError
from model.options import device_name, positive_int

# Photos read as one batch: at most this many, holding at most this many pixels (a photo
# over it is read alone; its mask is drawn at its full size).
RUN_IMAGES = 32
RUN_PIXELS = 48_000_000


def register(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="classify images; one JSON line per image")
    predict.add_argument(
        "images",
        type=Path,
        nargs="+",
        metavar="IMAGE",
        help="image files, one sign photo each, or folders of them (their images, by name)",
    )
    predict.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model file or run folder (default: newest run, else shipped)",
    )
    predict.add_argument(
        "--top-k", type=positive_int, default=5, help="how many classes to list (at least 1)"
    )
    predict.add_argument(
        "--mask",
        choices=("none", "rle", "png"),
        default="none",
        help="include the mask as COCO RLE or base64 PNG (the API's mask object)",
    )
    predict.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from data.images import image_suffixes
    from model.checkpoint import ModelFileError
    from model.inference import Predictor
    from model.runs import resolve_model
    from service.schemas import MaskFormat, encode_mask

    fault = device_fault(args.device)
    if fault is not None:
        print(f"error: {fault}", file=sys.stderr)
        return 2
    try:
        predictor = Predictor.load(resolve_model(args.model), args.device)
    except (FileNotFoundError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failures = 0
    images = folders_opened(args.images, lambda path: path.suffix.lower() in image_suffixes())
    for run in _decoded_runs(images):
        photos = [image for _, image in run if not isinstance(image, DataError)]
        predictions = iter(predictor.read_images(photos, top_k=args.top_k) if photos else [])
        for path, image in run:
            if isinstance(image, DataError):
                print(json.dumps({"image": str(path), "error": str(image)}))
                failures += 1
                continue
            prediction = next(predictions)
            # The fields and shapes of the API's answer (POST /v1/predict), less its timings.
            mask = encode_mask(prediction.mask, MaskFormat(args.mask))
            line = {
                "image": str(path),
                "kind": prediction.kind,  # sign, unknown_sign or no_sign (class_id null)
                "class_id": prediction.class_id,
                "class_name": prediction.class_name,
                "confidence": round(prediction.confidence, 4),
                "top_k": [
                    {
                        "class_id": s.class_id,
                        "class_name": s.class_name,
                        "confidence": round(s.confidence, 4),
                    }
                    for s in prediction.top_k
                ],
                "box": prediction.box,
                "mask": None if mask is None else mask.model_dump(mode="json"),
                "image_size": list(prediction.mask.shape),
            }
            print(json.dumps(line), flush=True)
    return 1 if failures else 0


def _decoded_runs(paths: list[Path]) -> Iterator[list[tuple[Path, np.ndarray | DataError]]]:
    """The photos decoded (upright, as the service reads them), or the error that refused
    each, in runs read as one batch (3x the photos per second of one at a time on 2 CPU
    cores). A run holds at most RUN_IMAGES photos and RUN_PIXELS pixels, by their headers,
    read before any is decoded; a larger photo is a run of its own."""
    from data.images import MAX_USER_PIXELS, read_rgb

    def decoded(path: Path) -> np.ndarray | DataError:
        if path.is_dir():  # left by folders_opened: none of its own files is an image
            return DataError(path, None, "a folder with no image in it (subfolders are not read)")
        try:
            return read_rgb(path, upright=True, max_pixels=MAX_USER_PIXELS)
        except DataError as error:
            return error

    run: list[Path] = []
    pixels = 0
    for path in paths:
        size = _header_pixels(path)
        if run and (len(run) == RUN_IMAGES or pixels + size > RUN_PIXELS):
            yield [(one, decoded(one)) for one in run]
            run, pixels = [], 0
        run.append(path)
        pixels += size
    if run:
        yield [(one, decoded(one)) for one in run]


def _header_pixels(path: Path) -> int:
    """Width x height from the image's header, without decoding it; 0 where it has none to
    read (decoding then says what is wrong)."""
    import warnings

    from PIL import Image

    from data.images import regular_file

    try:
        with regular_file(path) as file, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                return image.width * image.height
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0
