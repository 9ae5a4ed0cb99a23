"""The bad-input corpus: every file or request a client might send by mistake or malice,
with the status and error code it must get. Never a 500; the server keeps serving.

Decision on tiny images: both sides must be at least `min_image_side` (8 px): a 1x1 image
holds no sign, and the model would only see one colour stretched to 32 x 32.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.decode import ImageLimits, decode_image
from service.errors import ImageTooLarge, InvalidImage, UnsupportedMedia

SCENE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
SCENE[12:36, 20:44] = (220, 30, 30)


def encoded(image: np.ndarray | Image.Image, fmt: str = "PNG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but which holds no pixel data at all: if
    anything tried to decode it, it would fail as truncated, not as too large."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def zero_png(width: int, height: int) -> bytes:
    """A real decompression bomb: a small file of zeros that decodes to width x height."""
    return encoded(Image.new("L", (width, height)))


def animated(fmt: str, **options) -> bytes:
    frames = [Image.fromarray(np.roll(SCENE, 8 * i, axis=1)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options
    )
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """SCENE stored turned 90 degrees counter-clockwise, with EXIF orientation 6 (rotate 90
    clockwise to display): displayed upright it is SCENE again, 48 x 64."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.ascontiguousarray(np.rot90(SCENE))
    return encoded(stored, "JPEG", quality=100, subsampling=0, exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    gray = SCENE.mean(axis=2).astype(np.uint16) * 257
    return encoded(Image.fromarray(gray))


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def one_file(data: bytes, name: str = "image.png", content_type: str = "image/png") -> dict:
    return {"files": {"file": (name, data, content_type)}}


JPEG = encoded(SCENE, "JPEG", quality=90)
PNG = encoded(SCENE)

# (case, request keyword arguments for POST /v1/predict, status, error code or None for 200)
CORPUS = [
    ("empty body", {}, 422, "validation_error"),
    ("missing field", {"files": {"image": ("a.png", PNG, "image/png")}}, 422, "validation_error"),
    ("json instead of a form", {"json": {"file": "a.png"}}, 422, "validation_error"),
    ("empty file", one_file(b""), 422, "empty_file"),
    (
        "text file",
        one_file(b"just some text\n" * 20, "notes.txt", "text/plain"),
        415,
        "unsupported_media_type",
    ),
    (
        "html named .png",
        one_file(b"<!doctype html><html><body>hi</body></html>"),
        415,
        "unsupported_media_type",
    ),
    (
        "postscript (never handed to Ghostscript)",
        one_file(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "a.eps"),
        415,
        "unsupported_media_type",
    ),
    ("truncated jpeg", one_file(truncated(JPEG), "a.jpg", "image/jpeg"), 422, "invalid_image"),
    ("truncated png", one_file(truncated(PNG)), 422, "invalid_image"),
    ("png with a wrong extension and type", one_file(PNG, "photo.jpg", "text/plain"), 200, None),
    ("1x1 image", one_file(encoded(SCENE[:1, :1])), 422, "image_too_small"),
    (
        "bomb: 2000x2000 zeros in a small file",
        one_file(zero_png(2000, 2000)),
        422,
        "image_too_large",
    ),
    (
        "bomb: header claims 100000x100000",
        one_file(png_header_only(100_000, 100_000)),
        422,
        "image_too_large",
    ),
    ("body over the size limit", one_file(b"\0" * (600 * 1024)), 413, "payload_too_large"),
    ("16-bit png", one_file(sixteen_bit_png()), 200, None),
    ("grayscale", one_file(encoded(Image.fromarray(SCENE).convert("L"))), 200, None),
    ("rgba", one_file(encoded(Image.fromarray(SCENE).convert("RGBA"))), 200, None),
    (
        "palette with transparency",
        one_file(encoded(Image.fromarray(SCENE).convert("P"), transparency=0)),
        200,
        None,
    ),
    ("cmyk jpeg", one_file(encoded(Image.fromarray(SCENE).convert("CMYK"), "JPEG")), 200, None),
    ("exif-rotated jpeg", one_file(exif_rotated_jpeg(), "a.jpg", "image/jpeg"), 200, None),
    ("animated gif", one_file(animated("GIF"), "a.gif", "image/gif"), 200, None),
    ("animated webp", one_file(animated("WEBP", lossless=True), "a.webp", "image/webp"), 200, None),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [case[1:] for case in CORPUS],
    ids=[case[0] for case in CORPUS],
)
def test_predict_corpus(client, request_kwargs, status, code) -> None:
    response = client.post("/v1/predict", params={"mask_format": "rle"}, **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    if code is None:
        assert body["mask"]["size"] == body["image_size"]
    else:
        assert body["error"]["code"] == code
        assert body["error"]["message"]
    assert client.get("/readyz").status_code == 200  # still serving


@pytest.mark.parametrize(
    ("params", "field"),
    [({"top_k": 0}, "top_k"), ({"top_k": 59}, "top_k"), ({"mask_format": "jpeg"}, "mask_format")],
)
def test_bad_query_parameters(client, params, field) -> None:
    response = client.post("/v1/predict", params=params, **one_file(PNG))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert field in response.json()["error"]["message"]


def test_malformed_multipart_is_a_bad_request(client) -> None:
    response = client.post(
        "/v1/predict",
        content=b"--b\r\nnot a part header at all",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code in (400, 422)
    assert response.json()["error"]["code"] in ("bad_request", "validation_error")


def predict(client, data: bytes) -> dict:
    response = client.post("/v1/predict", params={"mask_format": "rle"}, **one_file(data))
    assert response.status_code == 200, response.text
    return response.json()


def test_exif_rotation_is_applied(client) -> None:
    rotated = predict(client, exif_rotated_jpeg())
    upright = predict(client, encoded(SCENE, "JPEG", quality=100, subsampling=0))
    stored = predict(client, encoded(np.ascontiguousarray(np.rot90(SCENE)), "PNG"))
    # Displayed upright the image is 48 x 64, not the 64 x 48 it is stored as, and the model
    # sees what the upright file shows: same class, same box in upright coordinates.
    assert rotated["image_size"] == [48, 64] and stored["image_size"] == [64, 48]
    assert rotated["class_id"] == upright["class_id"]
    assert rotated["box"] is not None and upright["box"] is not None
    assert np.abs(np.subtract(rotated["box"], upright["box"])).max() <= 2
    assert rotated["box"][2] <= 64 and rotated["box"][3] <= 48


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_give_their_first_frame(client, fmt) -> None:
    data = animated(fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    with Image.open(io.BytesIO(data)) as image:
        assert image.n_frames == 3
        first_frame = encoded(image.convert("RGB"))
    whole, first = predict(client, data), predict(client, first_frame)
    assert whole["class_id"] == first["class_id"]
    assert whole["confidence"] == pytest.approx(first["confidence"], abs=1e-6)
    assert whole["mask"] == first["mask"]


def test_sixteen_bit_png_is_scaled_not_clipped(client) -> None:
    gray8 = (SCENE.mean(axis=2).astype(np.uint16)).astype(np.uint8)
    wide, narrow = predict(client, sixteen_bit_png()), predict(client, encoded(gray8))
    assert wide["class_id"] == narrow["class_id"]
    assert wide["confidence"] == pytest.approx(narrow["confidence"], abs=1e-6)


def test_bombs_are_refused_from_the_header_alone() -> None:
    limits = ImageLimits(max_pixels=1_000_000)
    # Under the limit, the same header-only file fails only once pixels are decoded.
    with pytest.raises(InvalidImage):
        decode_image(png_header_only(500, 500), limits)
    with pytest.raises(ImageTooLarge, match="2000x2000"):
        decode_image(png_header_only(2000, 2000), limits)
    # Past PIL's own backstop the answer still names the service's limit.
    with pytest.raises(ImageTooLarge, match="the limit is 1000000$"):
        decode_image(png_header_only(100_000, 100_000), limits)
    with pytest.raises(UnsupportedMedia):
        decode_image(b"GIF87a but not really", limits)


def test_video_route_refuses_an_image_before_streaming(client) -> None:
    response = client.post("/v1/video", files={"file": ("clip.mp4", JPEG, "video/mp4")})
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_video_whose_first_frame_fails_is_refused_before_streaming(
    client, media, tmp_path: Path
) -> None:
    # Cut at 60 %, FFmpeg reports invalid data before it has output a single frame: the
    # first frame is decoded before the answer starts, so this is a plain 422.
    clip = media.video(tmp_path / "clip", "mp4", frames=30, options={"movflags": "faststart"})
    data = clip.read_bytes()
    response = client.post(
        "/v1/video", files={"file": ("clip.mp4", data[: int(len(data) * 0.6)], "video/mp4")}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_video"


@pytest.mark.parametrize(
    ("container", "codec", "kept"),
    [
        ("mp4", "libx264", 0.9),  # decodes without error, fewer frames than declared
        ("matroska", "libx264", 0.8),
        ("webm", "libvpx-vp9", 0.8),
    ],
)
def test_truncated_video_ends_with_an_error_line(
    client, media, tmp_path: Path, container, codec, kept
) -> None:
    options = {"movflags": "faststart"} if container == "mp4" else {}
    clip = media.video(tmp_path / "clip", container, codec, frames=30, options=options)
    data = clip.read_bytes()
    response = client.post(
        "/v1/video",
        params={"mask_format": "none"},
        files={"file": ("clip", data[: int(len(data) * kept)], "video/mp4")},
    )
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[-1]["error"]["code"] == "invalid_video"
    assert not any("summary" in line for line in lines)
    assert all("frame_index" in line for line in lines[:-1])
    assert len(lines) - 1 < 30


def test_mp4_cut_before_its_index_is_refused_before_streaming(client, media, tmp_path) -> None:
    # Without faststart the index (moov) comes last: cut short, the file has no streams.
    data = media.video(tmp_path / "clip.mp4", frames=30).read_bytes()
    response = client.post(
        "/v1/video", files={"file": ("clip.mp4", data[: len(data) // 2], "video/mp4")}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_video"


def asgi_post(app, headers: list[tuple[bytes, bytes]], chunks: int, chunk_size: int):
    """POST /v1/predict straight through ASGI with a body of `chunks` chunks; returns the
    response status and how many chunks the app pulled."""
    part_header = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        body = part_header if pulled == 1 else b"\0" * chunk_size
        return {"type": "http.request", "body": body, "more_body": pulled < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"multipart/form-data; boundary=xyz"),
            *headers,
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def test_oversize_body_is_refused_without_reading_it(make_settings) -> None:
    app = create_app(make_settings(max_upload_bytes=64 * 1024))
    chunk, chunks = 16 * 1024, 4096  # a 64 MiB body, if anyone read it all

    # Declared too large: refused before a single chunk is read.
    declared = [(b"content-length", str(chunk * chunks).encode())]
    status, body, pulled = asgi_post(app, declared, chunks, chunk)
    assert (status, body["error"]["code"], pulled) == (413, "payload_too_large", 0)

    # Streamed (no length): refused as soon as the count passes the limit.
    status, body, pulled = asgi_post(app, [], chunks, chunk)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert pulled <= 64 * 1024 // chunk + 2
