"""Load benchmark of the inference service, with its in-process baselines in the same run.

    .venv/bin/python bench/service_load.py [--model RUN] [--clients 32] [--seconds 10]

Phases, in order (the baselines run before the server starts, so nothing competes):
1. model:    Predictor.predict_batch on pre-decoded batches of max_batch_size (the ceiling);
2. engine:   the service's path without HTTP: N concurrent in-process clients, each image
             taking service/pipeline.py's steps (decode and prepare in a thread, the
             batching engine, encode in a thread), the very code the routes run;
3. service:  uvicorn in a subprocess on loopback, N concurrent clients (keep-alive, a light
             raw-socket client) POSTing the same images to /v1/predict for a bounded time;
4. overload: open-loop arrivals at --overload-factor times the service's measured
             throughput: the excess must get fast 503s (Retry-After) while the answered
             requests keep a bounded latency (compare the phase's first and second halves:
             without admission control the backlog, and the latency, would keep growing);
5. video:    frames/s of /v1/video on the dashcam clip;
6. stream:   a WebSocket client pushing JPEG frames at --ws-fps; end-to-end latency of the
             answered frames and how many were dropped (latest frame wins).

With --scene-model, the video and stream phases run in scene mode (mode=scene: every sign of
each frame found, read and tracked) and a `scene` phase measures /v1/detect's pipeline on
the clip's frames in process; --[no-]scene-bf16 sets the scene model's CPU dtype for both.

Images are the real CTSRD sample when ../shared/data is present, else synthetic scenes.
Prints throughput, p50/p95/p99 latency, error counts and the ratio service / engine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx
import numpy as np
import torch
import websockets
from PIL import Image

from data.images import upright_video_frame
from model.detect import DetectConfig, SceneSegmenter
from model.inference import Predictor
from model.runs import resolve_model
from service.decode import ImageLimits, prepare_image
from service.engine import Engine
from service.limits import PixelBudget
from service.pipeline import Options, Pipeline
from service.schemas import MaskFormat

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("GREEDYSIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--model", help="model file or run folder (default: resolve_model())")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--images", type=int, default=64, help="distinct images to cycle")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--overload-factor", type=float, default=2.0)
    parser.add_argument("--mask-format", default="png", choices=("png", "rle", "none"))
    parser.add_argument("--video", type=Path, default=SHARED_DATA / "video" / "traffic.mp4")
    parser.add_argument("--ws-fps", type=float, default=30.0)
    parser.add_argument("--skip", nargs="*", default=[], help="phases to skip, e.g. video")
    parser.add_argument(
        "--scene-model", type=Path, help="run video, stream and a scene phase in scene mode"
    )
    parser.add_argument("--scene-long-side", type=int, default=1024)
    parser.add_argument(
        "--scene-bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the scene model in bfloat16 on a CPU (default: the service's, where it has AMX)",
    )
    return parser


# --- inputs ---------------------------------------------------------------------------------


def load_images(count: int) -> tuple[list[bytes], str]:
    """`count` encoded images: real CTSRD PNGs when available, else synthetic scenes."""
    folder = SHARED_DATA / "ctsrd-real" / "images"
    if folder.is_dir():
        paths = sorted(folder.glob("*.png"))
        step = max(1, len(paths) // count)
        return [p.read_bytes() for p in paths[::step][:count]], f"CTSRD real ({folder})"
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        image = rng.integers(0, 120, (128, 128, 3), dtype=np.uint8)
        image[32:96, 32:96] = (220, 30, 30)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images, "synthetic 128x128"


def video_frames_as_jpeg(path: Path, count: int) -> list[bytes]:
    """The first `count` frames of a video as JPEG bytes: what a dashcam client sends."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            buffer = io.BytesIO()
            Image.fromarray(upright_video_frame(frame)).save(buffer, format="JPEG", quality=85)
            frames.append(buffer.getvalue())
            if len(frames) == count:
                break
    return frames


# --- measurements ---------------------------------------------------------------------------


@dataclass
class Load:
    """Results of one closed-loop phase: (status, latency ms) per request."""

    seconds: float = 0.0
    samples: list[tuple[int | str, float]] = field(default_factory=list)

    def record(self, status: int | str, started: float) -> None:
        self.samples.append((status, (time.perf_counter() - started) * 1000))

    def statuses(self) -> Counter:
        return Counter(status for status, _ in self.samples)

    def throughput(self) -> float:
        return self.statuses()[200] / self.seconds if self.seconds else 0.0

    def line(self, name: str, status: int = 200) -> str:
        latencies = [ms for s, ms in self.samples if s == status]
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else [np.nan] * 3
        counts = " ".join(f"{s}:{n}" for s, n in sorted(self.statuses().items(), key=str))
        return (
            f"{name:<10} {self.throughput():8.1f} img/s   {status}s: p50 {p50:7.1f}  "
            f"p95 {p95:7.1f}  p99 {p99:7.1f} ms   [{counts}]"
        )


def measure_model(predictor: Predictor, images: list[bytes], batch: int, seconds: float) -> Load:
    limits = ImageLimits(max_pixels=10**8)
    prepared = [prepare_image(data, limits, predictor.preprocess) for data in images]
    batches = [prepared[i : i + batch] for i in range(0, len(prepared) - batch + 1, batch)]
    load = Load()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for group in batches:
            t0 = time.perf_counter()
            predictor.predict_batch(
                torch.stack([p.tensor for p in group]), [p.size for p in group], top_k=5
            )
            for _ in group:  # every image of the batch waited for the whole batch
                load.record(200, t0)
    load.seconds = time.perf_counter() - started
    return load


async def measure_engine(
    predictor: Predictor,
    images: list[bytes],
    args,
    scene: SceneSegmenter | None = None,
    clients: int | None = None,
) -> Load:
    """The service's work without HTTP: service/pipeline.py's answer() per image, as the
    routes call it (in scene mode with `scene`)."""
    config = DetectConfig(long_side=args.scene_long_side)
    engine = Engine(
        predictor,
        scene=scene,
        scene_input=(736, 1280),
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
    )
    await engine.start()
    limits = ImageLimits(max_pixels=10**8)
    pipeline = Pipeline(engine, predictor, PixelBudget(10**9, 600), limits, config)
    mode = pipeline.mode("scene" if scene is not None else "classify")
    options = Options(5, MaskFormat(args.mask_format))
    load = Load()
    deadline = time.perf_counter() + args.seconds

    async def client(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await pipeline.answer(images[index % len(images)], mode, options)
            load.record(200, t0)
            index += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients or args.clients)))
    load.seconds = time.perf_counter() - started
    await engine.stop()
    return load


# A minimal HTTP/1.1 client for the load phases: requests are prebuilt bytes and only the
# status line and Content-Length are parsed, so on a small machine the load generator does
# not eat the CPU the service is being measured on (httpx costs about 1-2 ms per request).
BOUNDARY = "greedysign-bench"


def predict_request(image: bytes, params: dict[str, str]) -> bytes:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="sign.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    query = "&".join(f"{key}={value}" for key, value in params.items())
    head = (
        f"POST /v1/predict?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, port: int):
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: bytes) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        await reader.readexactly(length)
        if "connection: close" in head:
            await self.close()
        return status

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def drive_closed_loop(port: int, requests: list[bytes], clients: int, seconds: float) -> Load:
    """`clients` clients, each sending its next request as soon as it has an answer."""
    load = Load()
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        connection = Connection(port)
        index = offset
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                status = await connection.send(requests[index % len(requests)])
            except (OSError, asyncio.IncompleteReadError) as error:
                status = type(error).__name__
                await connection.close()
            load.record(status, t0)
            index += 1
        await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    load.seconds = time.perf_counter() - started
    return load


async def drive_open_loop(port: int, requests: list[bytes], rate: float, seconds: float):
    """Requests sent at a fixed `rate` whatever the answers (open loop), as real traffic
    overloads a server. Returns the Load and (send time, status, ms) per request."""
    load = Load()
    timeline: list[tuple[float, int | str, float]] = []
    idle: list[Connection] = []

    async def one(index: int, sent: float) -> None:
        connection = idle.pop() if idle else Connection(port)
        t0 = time.perf_counter()
        try:
            status = await connection.send(requests[index % len(requests)])
            idle.append(connection)
        except (OSError, asyncio.IncompleteReadError) as error:
            status = type(error).__name__
            await connection.close()
        load.record(status, t0)
        timeline.append((sent, status, load.samples[-1][1]))

    started = time.perf_counter()
    tasks = []
    for index in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(index, time.perf_counter() - started)))
    await asyncio.gather(*tasks)
    load.seconds = time.perf_counter() - started
    for connection in idle:
        await connection.close()
    return load, timeline


async def measure_video(url: str, path: Path, mask_format: str, mode: str = "classify") -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        started = time.perf_counter()
        with path.open("rb") as file:
            response = await http.post(
                "/v1/video",
                params={"mask_format": mask_format, "mode": mode},
                files={"file": (path.name, file, "video/mp4")},
            )
        seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in response.text.splitlines()]
    frames = sum("frame_index" in line for line in lines)
    return {
        "status": response.status_code,
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds,
        "last": list(lines[-1]),
    }


async def measure_stream(
    url: str, frames: list[bytes], fps: float, mask_format: str, mode: str = "classify"
) -> dict:
    """Push frames at `fps` regardless of answers; latency = answer time - send time."""
    query = f"mask_format={mask_format}&mode={mode}"
    ws_url = url.replace("http://", "ws://") + f"/v1/stream?{query}"
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    errors = 0
    dropped_total = 0
    async with websockets.connect(ws_url, max_size=2**24) as ws:

        async def send() -> None:
            period = 1 / fps
            started = time.perf_counter()
            for frame_id, frame in enumerate(frames):
                await asyncio.sleep(max(0.0, started + frame_id * period - time.perf_counter()))
                sent_at[frame_id] = time.perf_counter()
                await ws.send(json.dumps({"frame_id": frame_id}))
                await ws.send(frame)

        async def receive() -> None:
            nonlocal errors, dropped_total
            answered = 0
            while answered + dropped_total < len(frames):
                answer = json.loads(await ws.recv())
                if "error" in answer:
                    errors += 1
                else:
                    latencies.append((time.perf_counter() - sent_at[answer["frame_id"]]) * 1000)
                dropped_total = answer.get("dropped", {}).get("total", dropped_total)
                answered += 1

        started = time.perf_counter()
        await asyncio.gather(send(), asyncio.wait_for(receive(), timeout=120))
        seconds = time.perf_counter() - started
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2
    return {
        "sent": len(frames),
        "answered": len(latencies),
        "dropped": dropped_total,
        "errors": errors,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "answers_per_s": len(latencies) / seconds,
    }


# --- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_service(model: Path, args):
    """uvicorn serving create_app in its own process (the clients get their own GIL)."""
    port = free_port()
    env = {
        **os.environ,
        "GREEDYSIGN_MODEL": str(model),
        "GREEDYSIGN_DEVICE": args.device,
        "GREEDYSIGN_MAX_BATCH_SIZE": str(args.max_batch_size),
        "GREEDYSIGN_MAX_WAIT_MS": str(args.max_wait_ms),
        "GREEDYSIGN_QUEUE_SIZE": str(args.queue_size),
        "GREEDYSIGN_MAX_VIDEO_FRAMES": "100000",
        "GREEDYSIGN_MAX_VIDEO_DECODED_FRAMES": "100000",
        "GREEDYSIGN_SCENES": "true" if args.scene_model else "false",
        "GREEDYSIGN_SCENE_LONG_SIDE": str(args.scene_long_side),
        **({"GREEDYSIGN_SCENE_MODEL": str(args.scene_model)} if args.scene_model else {}),
        **({} if args.scene_bf16 is None else {"GREEDYSIGN_SCENE_BF16": str(args.scene_bf16)}),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.app:app_from_environment",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(command, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the service exited with {server.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not become ready within 120 s")
            time.sleep(0.2)
        yield port, url
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- main -----------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    try:
        model = resolve_model(args.model)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images, source = load_images(args.images)
    predictor = Predictor.load(model, args.device)
    predictor.warmup(args.max_batch_size)
    print(
        f"model {model} on {predictor.device}{' fp16' if predictor.fp16 else ''}; "
        f"{len(images)} images: {source}; torch threads {torch.get_num_threads()}"
    )
    print(
        f"batch <= {args.max_batch_size}, wait <= {args.max_wait_ms} ms, queue "
        f"{args.queue_size}, {args.clients} clients, {args.seconds:g} s per phase, "
        f"masks {args.mask_format}\n"
    )

    # In a worker thread, like the engine's inference: on a CPU shared with other processes,
    # OpenMP work started from the main thread was measured 10x slower than the same work
    # started from another thread (1.7 s against 0.11 s per batch of 16 at 64 px).
    with ThreadPoolExecutor(max_workers=1) as worker:
        raw = worker.submit(
            measure_model, predictor, images, args.max_batch_size, args.seconds
        ).result()
    print(raw.line("model") + "   (latency: the batch's)")
    engine = asyncio.run(measure_engine(predictor, images, args))
    print(engine.line("engine"))
    mode = "classify"
    if args.scene_model is not None and "scene" not in args.skip and args.video.is_file():
        mode = "scene"
        scene = SceneSegmenter.load(args.scene_model, predictor.device, bf16=args.scene_bf16)
        frames = video_frames_as_jpeg(args.video, 32)
        detected = asyncio.run(measure_engine(predictor, frames, args, scene, clients=2))
        where = f"/v1/detect's pipeline, {args.video.name} frames, {scene.dtype_name}"
        print(detected.line("scene") + f"   ({where})")
        del scene
    del predictor

    with running_service(model, args) as (port, url):
        requests = [predict_request(image, {"mask_format": args.mask_format}) for image in images]
        service = asyncio.run(drive_closed_loop(port, requests, args.clients, args.seconds))
        print(service.line("service"))
        server_errors = sum(
            n for s, n in service.statuses().items() if not isinstance(s, int) or s >= 500
        )
        print(
            f"\nservice / engine = {service.throughput() / engine.throughput():.2f}   "
            f"service / model = {service.throughput() / raw.throughput():.2f}   "
            f"5xx or failed = {server_errors}"
        )

        if "overload" not in args.skip:
            rate = args.overload_factor * service.throughput()
            overload, timeline = asyncio.run(drive_open_loop(port, requests, rate, args.seconds))
            print(
                f"\noverload: {rate:.0f} requests/s offered ({args.overload_factor:g} x the "
                f"service's throughput), {args.queue_size} places"
            )
            print(overload.line("overload", 200))
            print(overload.line("overload", 503))
            half = args.seconds / 2
            for name, part in (
                ("1st half", [t for t in timeline if t[0] < half]),
                ("2nd half", [t for t in timeline if t[0] >= half]),
            ):
                answered = [ms for _, status, ms in part if status == 200]
                p95 = np.percentile(answered, 95) if answered else float("nan")
                print(
                    f"  {name}: {len(answered)} answered 200, p95 {p95:.0f} ms; "
                    f"{sum(status == 503 for _, status, _ in part)} answered 503"
                )

        if "video" not in args.skip and args.video.is_file():
            video = asyncio.run(measure_video(url, args.video, args.mask_format, mode))
            print(
                f"\nvideo {args.video.name} ({mode}): {video['frames']} frames in "
                f"{video['seconds']:.1f} s = {video['fps']:.1f} frames/s "
                f"(status {video['status']}, last line {video['last']})"
            )

        if "stream" not in args.skip and args.video.is_file():
            count = int(args.ws_fps * args.seconds)
            frames = video_frames_as_jpeg(args.video, count)
            stream = asyncio.run(measure_stream(url, frames, args.ws_fps, args.mask_format, mode))
            print(
                f"\nstream ({mode}) at {args.ws_fps:g} frames/s: {stream['sent']} sent, "
                f"{stream['answered']} answered ({stream['answers_per_s']:.1f}/s), "
                f"{stream['dropped']} dropped, {stream['errors']} errors; end-to-end "
                f"p50 {stream['p50_ms']:.1f} ms, p95 {stream['p95_ms']:.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
