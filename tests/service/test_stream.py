"""WS /v1/stream: frame ids, latest frame wins, bad frames, API key."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from service.app import create_app
from service.errors import POLICY_VIOLATION, InvalidParameters, refuse_handshake
from service.routes.stream import LatestFrame


def test_frames_are_answered_with_their_frame_id(client, media) -> None:
    frame = media.encode(media.scene(), "JPEG")
    with client.websocket_connect("/v1/stream?top_k=2") as ws:
        ws.send_text(json.dumps({"frame_id": "cam-7"}))
        ws.send_bytes(frame)
        named = ws.receive_json()
        ws.send_bytes(frame)  # no header: numbered by arrival, counting from 0
        numbered = ws.receive_json()
    assert named["frame_id"] == "cam-7" and numbered["frame_id"] == 1
    assert named["image_size"] == [48, 64] and len(named["top_k"]) == 2
    assert named["mask"]["format"] == "png"
    assert named["dropped"] == {"since_last": 0, "total": 0}


def test_bad_frames_and_messages_get_errors_and_the_socket_stays_open(client, media) -> None:
    with client.websocket_connect("/v1/stream?mask_format=none") as ws:
        ws.send_bytes(b"not an image")
        bad_frame = ws.receive_json()
        ws.send_text("{not json")
        bad_text = ws.receive_json()
        ws.send_text(json.dumps({"frame_id": [1, 2]}))
        bad_id = ws.receive_json()
        ws.send_text(json.dumps({"frame_id": 41}))
        ws.send_bytes(media.encode(media.scene()))
        good = ws.receive_json()
    assert bad_frame["frame_id"] == 0
    assert bad_frame["error"]["code"] == "unsupported_media_type"
    assert bad_text["error"]["code"] == bad_id["error"]["code"] == "invalid_message"
    assert good["frame_id"] == 41 and good["class_name"]


def test_oversize_frames_are_refused(make_settings, media) -> None:
    with (
        TestClient(create_app(make_settings(max_upload_bytes=2048))) as client,
        client.websocket_connect("/v1/stream") as ws,
    ):
        ws.send_bytes(b"\0" * 4096)
        assert ws.receive_json()["error"]["code"] == "payload_too_large"


def test_latest_frame_wins_when_frames_come_faster_than_answers(client, media) -> None:
    frame = media.encode(media.scene(), "JPEG")
    sent = 15
    answers = []
    with client.websocket_connect("/v1/stream?mask_format=none") as ws:
        for frame_id in range(sent):
            ws.send_text(json.dumps({"frame_id": frame_id}))
            ws.send_bytes(frame)
        while not answers or answers[-1]["frame_id"] != sent - 1:
            answers.append(ws.receive_json())
    dropped_total = answers[-1]["dropped"]["total"]
    assert len(answers) + dropped_total == sent
    assert dropped_total > 0  # the model is far slower than a loop of sends
    assert sum(a["dropped"]["since_last"] for a in answers) == dropped_total
    ids = [a["frame_id"] for a in answers]
    assert ids == sorted(ids) and ids[-1] == sent - 1  # the newest frame is always answered


def test_latest_frame_slot() -> None:
    async def scenario():
        slot = LatestFrame()
        slot.put(1, b"a")
        slot.put(2, b"b")
        slot.put(3, b"c")
        first = await slot.take()
        waiter = asyncio.create_task(slot.take())
        await asyncio.sleep(0)
        slot.put(4, b"d")
        second = await waiter
        slot.close()
        return first, second, await slot.take(), slot.dropped_total

    first, second, after_close, dropped = asyncio.run(scenario())
    assert first == (3, b"c", 2) and second == (4, b"d", 0)
    assert after_close is None and dropped == 2


@pytest.mark.parametrize("early_key_check", [True, False], ids=["guard", "route"])
def test_stream_needs_the_api_key_when_one_is_set(make_settings, media, early_key_check) -> None:
    """A missing or wrong key refuses the handshake with the JSON 401 an HTTP route gives,
    whether the access guard (before routing) or the route itself checks it."""
    settings = make_settings(api_key="s3cret", early_key_check=early_key_check)
    with TestClient(create_app(settings)) as client:
        for query in ("", "?api_key=guess"):
            with (
                pytest.raises(WebSocketDenialResponse) as refused,
                client.websocket_connect(f"/v1/stream{query}"),
            ):
                pass
            assert refused.value.status_code == 401
            error = refused.value.json()["error"]
            assert error["code"] == "unauthorized" and "api_key" in error["message"]
        with client.websocket_connect("/v1/stream?api_key=s3cret&mask_format=none") as ws:
            ws.send_bytes(media.encode(media.scene()))
            assert "class_id" in ws.receive_json()
        headers = {"X-API-Key": "s3cret"}
        with client.websocket_connect("/v1/stream?mask_format=none", headers=headers) as ws:
            ws.send_bytes(media.encode(media.scene()))
            assert "class_id" in ws.receive_json()


def test_streams_past_max_streams_are_refused_and_their_places_come_back(
    make_settings, media
) -> None:
    frame = media.encode(media.scene())
    with TestClient(create_app(make_settings(max_streams=1))) as client:
        with client.websocket_connect("/v1/stream?mask_format=none") as first:
            with (
                pytest.raises(WebSocketDenialResponse) as refused,
                client.websocket_connect("/v1/stream"),
            ):
                pass
            assert refused.value.status_code == 503
            assert refused.value.headers["Retry-After"] == "1"
            error = refused.value.json()["error"]
            assert error["code"] == "overloaded" and "1 streams" in error["message"]
            first.send_bytes(frame)
            assert "class_id" in first.receive_json()
        with client.websocket_connect("/v1/stream?mask_format=none") as again:
            again.send_bytes(frame)
            assert "class_id" in again.receive_json()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("mode=bogus", "query.mode"),
        ("top_k=0", "query.top_k"),
        ("mask_format=gif", "query.mask_format"),
    ],
)
def test_a_bad_query_parameter_refuses_the_handshake_with_a_json_422(client, query, named) -> None:
    """As /v1/predict answers a bad query parameter: not a bare close, which a client sees as
    the 403 of a refused origin."""
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect(f"/v1/stream?{query}"),
    ):
        pass
    assert refused.value.status_code == 422
    assert refused.value.headers["content-type"] == "application/json"
    error = refused.value.json()["error"]
    assert error["code"] == "validation_error" and error["message"].startswith(named)


def test_without_denial_responses_a_refusal_is_a_close_code_and_reason() -> None:
    """A server without ASGI's websocket.http.response extension cannot send the JSON: the
    refusal is a close code with the message as its reason, cut to what a reason may hold."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    refusal = InvalidParameters("query.mode: Input should be 'classify' or 'scene' " + "x" * 200)
    asyncio.run(refuse_handshake({"type": "websocket"}, send, refusal, POLICY_VIOLATION))
    [close] = sent
    assert close["type"] == "websocket.close" and close["code"] == POLICY_VIOLATION
    assert close["reason"].startswith("query.mode:") and len(close["reason"].encode()) <= 123

    sent.clear()
    scope = {"type": "websocket", "extensions": {"websocket.http.response": {}}}
    asyncio.run(refuse_handshake(scope, send, refusal, POLICY_VIOLATION))
    start, body = sent
    assert start["type"] == "websocket.http.response.start" and start["status"] == 422
    assert json.loads(body["body"])["error"]["code"] == "validation_error"


def test_plain_http_on_the_stream_path_is_told_to_upgrade(client) -> None:
    """The path is there, but only as a WebSocket: 426 naming the protocol, not a 404 that
    says there is nothing there. Other methods: 405, since the handshake is a GET."""
    plain = client.get("/v1/stream")
    assert plain.status_code == 426 and plain.headers["Upgrade"] == "websocket"
    assert plain.json()["error"]["code"] == "upgrade_required"
    posted = client.post("/v1/stream")
    assert posted.status_code == 405 and posted.headers["Allow"] == "GET"
    assert posted.json()["error"]["code"] == "method_not_allowed"


def test_a_websocket_to_no_route_is_refused_with_a_json_404(client) -> None:
    """Not Starlette's bare close, which a client reads as an empty 403."""
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect("/v1/streem"),
    ):
        pass
    assert refused.value.status_code == 404
    error = refused.value.json()["error"]
    assert error["code"] == "not_found" and "/v1/stream" in error["message"]
    assert client.get("/v1/streem").status_code == 404  # HTTP still gets the router's 404
