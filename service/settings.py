"""Service settings: one validated object, read from GREEDYSIGN_* environment variables (or
given by `greedysign serve`), handed to `create_app(settings)`. Nothing is read at import."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GREEDYSIGN_")

    model: Path | None = Field(
        None, description="model file or run folder; default: newest run, else shipped model"
    )
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N")

    # Scene mode (/v1/detect, mode=scene on /v1/video and /v1/stream): a scene model finds
    # the signs of a whole frame, the model above reads each one.
    scene_model: Path | None = Field(
        None,
        description="scene model file (task 'scenes'); default: the shipped scene model, "
        "when the package has one",
    )
    scenes: bool = Field(
        True, description="serve scene mode; false: no scene model is loaded (scene routes 503)"
    )
    scene_long_side: int = Field(
        1024, ge=32, le=4096, description="frames are resized to this longer side (px)"
    )
    scene_max_upscale: float = Field(
        1.5,
        ge=1,
        le=8,
        description="a frame smaller than the long side is enlarged toward it by at most "
        "this factor (1: never)",
    )
    scene_tile: int = Field(
        0, ge=0, le=4096, description="0: the whole frame at once; else tiles of this side"
    )
    scene_threshold: float = Field(0.5, gt=0, lt=1, description="sign probability threshold")
    scene_read_margin: float = Field(
        0.1,
        ge=0,
        le=1,
        description="each sign is read cut from the frame with this share of its width and "
        "height added on each side",
    )
    scene_split_touching: bool = Field(
        True,
        description="part signs that touch (stacked on one pole): between their cores, or at "
        "their neck for a scene model without cores",
    )
    scene_require_core: bool = Field(
        True, description="with a scene model that draws cores, drop regions without one"
    )
    scene_part_boards: bool = Field(
        True,
        description="part a region of direction boards stacked flush at the seams the frame "
        "shows between them",
    )
    scene_min_solidity: float = Field(
        0.75,
        ge=0,
        le=1,
        description="drop a region whose mask fills less than this share of its convex hull "
        "(signs are convex; 0 keeps every shape)",
    )
    scene_mirror: bool | None = Field(
        None,
        description="also run each frame mirrored and average: fewer false signs for twice "
        "the scene model's time; default: on with a GPU, off on a CPU",
    )
    scene_bf16: bool | None = Field(
        None,
        description="run the scene model in bfloat16 on a CPU: about 2x faster on one with "
        "AMX (Xeon 4th generation and later), slower on one without; default: on where the "
        "CPU has AMX; a GPU runs float16",
    )
    scene_max_batch_size: int = Field(2, ge=1, le=64, description="frames per scene batch")
    web_dir: Path | None = Field(
        None, description="folder of the browser app, served at / (greedysign serve sets it)"
    )

    # Dynamic batching: a batch goes when it holds max_batch_size images or when its oldest
    # image has waited max_wait_ms. The queue bounds the backlog; past it requests get 503.
    max_batch_size: int = Field(16, ge=1, le=512)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    queue_size: int = Field(256, ge=1, le=100_000)
    scene_queue_size: int = Field(
        16,
        ge=1,
        le=10_000,
        description="whole frames (/v1/detect, stream frames in scene mode) in work at once, "
        "within queue_size; past it they get 503 at once",
    )
    request_timeout_s: float = Field(30.0, gt=0, le=3600)

    # Input limits: request bodies (images, video uploads), decoded pixels per image (checked
    # from the header, before any pixel is decoded), and frames processed per video.
    max_upload_bytes: int = Field(20 * MiB, ge=1024)
    max_video_bytes: int = Field(512 * MiB, ge=1024)
    max_pixels: int = Field(25_000_000, ge=64)
    min_image_side: int = Field(8, ge=1, description="smaller images are refused (422)")
    max_video_frames: int = Field(3000, ge=1)
    max_videos: int = Field(
        8, ge=1, le=10_000, description="video uploads answered at once; past it 503 at once"
    )
    max_batch_files: int = Field(64, ge=1, le=1000)
    max_streams: int = Field(
        32,
        ge=1,
        le=10_000,
        description="WebSocket streams open at once; past it the handshake gets a 503",
    )

    # Hostile clients. Every video frame is checked against max_pixels as it is decoded
    # (always: a container's header may lie about the size of its frames).
    pixel_budget: int = Field(
        64_000_000,
        ge=64,
        description="pixels (width x height) of the images being decoded and answered at "
        "once, over all requests; more wait their turn (503 past request_timeout_s). An "
        "eighth is kept for images no larger than that eighth",
    )
    body_read_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="longest wait for the next part of a request body (408, connection closed)",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="longest wait for a request's head (request line and headers), from the "
        "connection's start or the end of the previous response, and for an idle keep-alive "
        "connection (then the connection closes)",
    )
    early_key_check: bool = Field(
        True,
        description="check X-API-Key (and the WebSocket's origin) from the request headers, "
        "before any body is read",
    )
    video_deadline_s: float = Field(
        120.0, gt=0, le=86_400, description="longest time one video upload may take"
    )
    max_video_decoded_frames: int = Field(
        30_000, ge=1, description="frames decoded per video, sampled or not"
    )

    api_key: SecretStr | None = Field(None, description="when set, /v1 needs X-API-Key")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated origins allowed by CORS and on the WebSocket, besides "
        "the service's own",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not _DEVICE.fullmatch(device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        return device

    @field_validator("scene_tile")
    @classmethod
    def _tile_stride(cls, tile: int) -> int:
        if tile % 32:
            raise ValueError(f"scene_tile must be 0 or a multiple of 32, got {tile}")
        return tile

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, origins: object) -> object:
        if isinstance(origins, str):
            return [origin.strip() for origin in origins.split(",") if origin.strip()]
        return origins

    @field_validator("api_key")
    @classmethod
    def _non_empty_key(cls, key: SecretStr | None) -> SecretStr | None:
        # An empty GREEDYSIGN_API_KEY= means "no key", not "the empty key".
        return key if key is not None and key.get_secret_value() else None

    @model_validator(mode="after")
    def _limits_fit_together(self) -> Settings:
        if self.queue_size < self.max_batch_size:
            raise ValueError(
                f"queue_size ({self.queue_size}) must be at least max_batch_size "
                f"({self.max_batch_size})"
            )
        if self.pixel_budget - self.pixel_budget // 8 < self.max_pixels:
            raise ValueError(
                f"pixel_budget ({self.pixel_budget}) must hold one image of max_pixels "
                f"({self.max_pixels}) besides the eighth it keeps for small images: at "
                f"least {-(-self.max_pixels * 8 // 7)}"
            )
        if self.max_video_decoded_frames < self.max_video_frames:
            raise ValueError(
                f"max_video_decoded_frames ({self.max_video_decoded_frames}) must be at least "
                f"max_video_frames ({self.max_video_frames})"
            )
        return self
