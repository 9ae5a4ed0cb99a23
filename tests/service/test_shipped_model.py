"""The shipped model through the service on real CTSRD images: the right class and a mask
whose box covers the annotated sign. Skips when the data is absent (fails instead under
GREEDYSIGN_REQUIRE_DATA=1, which `make test` sets where ../shared/data exists)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from model.runs import SHIPPED_MODEL
from service.app import create_app
from service.settings import Settings

# Every 40th annotated image: 30 images across the classes, in a few seconds on a CPU.
STRIDE = 40


def box_iou(a: list[int], b: list[int]) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union else 0.0


def test_real_images_get_the_right_class_and_box(ctsrd_real) -> None:
    lines = (ctsrd_real / "annotations.txt").read_text().split()[::STRIDE]
    correct, ious = 0, []
    settings = Settings(model=SHIPPED_MODEL, device="cpu")
    with TestClient(create_app(settings)) as client:
        for line in lines:
            name, _w, _h, x1, y1, x2, y2, class_id = line.strip().rstrip(";").split(";")
            data = (ctsrd_real / "images" / name).read_bytes()
            body = client.post(
                "/v1/predict", params={"mask_format": "none"}, files={"file": (name, data)}
            ).json()
            correct += body["class_id"] == int(class_id)
            truth = [int(x1), int(y1), int(x2), int(y2)]
            ious.append(box_iou(body["box"], truth) if body["box"] else 0.0)
    assert correct / len(lines) >= 0.8
    assert sum(ious) / len(ious) >= 0.6
