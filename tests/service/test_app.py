"""The app around the routes: settings, lifespan and readiness, metrics, API key, CORS."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from model.detect import DetectConfig
from service.app import create_app, detect_config
from service.settings import Settings


def test_settings_come_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("GREEDYSIGN_MODEL", str(tmp_path / "model.pt"))
    monkeypatch.setenv("GREEDYSIGN_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("GREEDYSIGN_API_KEY", "s3cret")
    monkeypatch.setenv("GREEDYSIGN_CORS_ORIGINS", "http://a.test, http://b.test")
    monkeypatch.setenv("GREEDYSIGN_SCENE_READ_MARGIN", "0.2")
    settings = Settings()
    assert detect_config(settings).margin == 0.2
    assert settings.model == tmp_path / "model.pt"
    assert settings.max_batch_size == 8
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.cors_origins == ["http://a.test", "http://b.test"]
    # Unset, the service reads regions as the CLI does.
    monkeypatch.delenv("GREEDYSIGN_SCENE_READ_MARGIN")
    assert detect_config(Settings()) == DetectConfig()


@pytest.mark.parametrize(
    "overrides",
    [
        {"device": "gpu"},
        {"max_batch_size": 0},
        {"max_wait_ms": -1},
        {"queue_size": 2, "max_batch_size": 4},
        {"max_upload_bytes": 10},
        {"request_timeout_s": 0},
        {"body_read_timeout_s": 0},
        {"video_deadline_s": -1},
        {"max_pixels": 25_000_000, "pixel_budget": 25_000_000},  # no room beside the eighth
        {"max_video_frames": 100, "max_video_decoded_frames": 99},
        {"scene_read_margin": -0.1},
    ],
)
def test_invalid_settings_are_refused(overrides) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)


def test_an_empty_api_key_means_none(monkeypatch) -> None:
    monkeypatch.setenv("GREEDYSIGN_API_KEY", "")
    assert Settings().api_key is None


def test_not_ready_until_the_lifespan_has_loaded_the_model(make_settings) -> None:
    app = create_app(make_settings())
    bare = TestClient(app)  # no `with`: the lifespan has not run
    assert bare.get("/healthz").status_code == 200
    response = bare.get("/readyz")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "not_ready"
    assert bare.get("/v1/model").status_code == 503
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
    assert bare.get("/readyz").status_code == 503  # after shutdown, not ready again


def test_a_missing_model_stops_start_up(make_settings, tmp_path) -> None:
    app = create_app(make_settings(model=tmp_path / "absent.pt"))
    with pytest.raises(FileNotFoundError, match="no model"), TestClient(app):
        pass


def test_metrics_count_requests_batches_and_errors(client, png_bytes) -> None:
    client.post("/v1/predict", files={"file": ("a.png", png_bytes)})
    client.post("/v1/predict", files={"file": ("a.txt", b"text")})
    client.get("/no/such/page")
    text = client.get("/metrics").text
    assert 'greedysign_http_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'greedysign_http_requests_total{method="POST",route="/v1/predict",status="415"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "greedysign_batch_size_bucket" in text
    assert "greedysign_http_request_seconds_bucket" in text
    assert "greedysign_queue_depth 0.0" in text


def test_each_app_has_its_own_metrics(make_settings, png_bytes) -> None:
    counted = 'greedysign_http_requests_total{method="POST",route="/v1/predict",status="200"} 1.0'
    with TestClient(create_app(make_settings())) as first:
        first.post("/v1/predict", files={"file": ("a.png", png_bytes)})
        assert counted in first.get("/metrics").text
        with TestClient(create_app(make_settings())) as second:
            assert 'route="/v1/predict"' not in second.get("/metrics").text
        assert counted in first.get("/metrics").text


def test_overload_is_a_503_with_retry_after(make_settings, png_bytes) -> None:
    app = create_app(make_settings(queue_size=1, max_batch_size=1))
    with TestClient(app) as client, ExitStack() as held:
        # Take the only place, on the app's own event loop, as a request in flight would.
        client.portal.call(held.enter_context, app.state.engine.admit())
        refused = client.post("/v1/predict", files={"file": ("a.png", png_bytes)})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        client.portal.call(held.close)
        metrics = client.get("/metrics").text
        assert 'route="/v1/predict",status="503"' in metrics
        assert client.post("/v1/predict", files={"file": ("a.png", png_bytes)}).status_code == 200


def test_api_key(make_settings, png_bytes) -> None:
    with TestClient(create_app(make_settings(api_key="s3cret"))) as client:
        upload = {"file": ("a.png", png_bytes)}
        missing = client.post("/v1/predict", files=upload)
        wrong = client.post("/v1/predict", files=upload, headers={"X-API-Key": "guess"})
        right = client.post("/v1/predict", files=upload, headers={"X-API-Key": "s3cret"})
        assert missing.status_code == wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"
        assert right.status_code == 200
        assert client.get("/v1/model").status_code == 401
        # Health, readiness and metrics stay open for probes and scrapers.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200


def test_cors_origins(make_settings) -> None:
    with TestClient(create_app(make_settings(cors_origins=["http://app.test"]))) as client:
        preflight = {"Origin": "http://app.test", "Access-Control-Request-Method": "POST"}
        allowed = client.options("/v1/predict", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "http://app.test"
        other = client.get("/healthz", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in other.headers


def test_errors_have_one_shape(client) -> None:
    for response in (client.get("/nowhere"), client.delete("/v1/predict")):
        assert set(response.json()) == {"error"}
        assert set(response.json()["error"]) == {"code", "message"}
    assert client.delete("/v1/predict").json()["error"]["code"] == "method_not_allowed"


def test_a_wrong_method_is_a_405_with_allow_beside_the_web_app(make_settings, tmp_path) -> None:
    """`greedysign serve` mounts the browser app at "/", which would take every path the
    routes do not fully match: a GET on a POST route must still be the route's 405."""
    (tmp_path / "index.html").write_text("<!doctype html><title>web app</title>")
    with TestClient(create_app(make_settings(), web_dir=tmp_path)) as client:
        for path in ("/v1/predict", "/v1/predict/batch", "/v1/detect", "/v1/video"):
            response = client.get(path)
            assert response.status_code == 405, path
            assert response.headers["Allow"] == "POST"
            assert response.json()["error"]["code"] == "method_not_allowed"
        deleted = client.delete("/healthz")
        assert deleted.status_code == 405 and deleted.headers["Allow"] == "GET"
        assert client.get("/v1/stream").status_code == 426
        # The web app still has every other path, and an unknown one is still a JSON 404.
        assert "web app" in client.get("/").text
        for path in ("/v1/nowhere", "/nowhere.js"):
            missing = client.get(path)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "not_found"
