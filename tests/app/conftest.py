"""Browser-test fixtures: the real service on a loopback port (uvicorn in a thread), Debian's
Chromium driven headless by Playwright, a page that fails the test on a script error or on
any request leaving 127.0.0.1, and screenshots of each tab.

Without Playwright or Chromium the browser tests skip with the reason (or fail, when
GREEDYSIGN_REQUIRE_BROWSER=1 says this machine must run them)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pytest
import uvicorn

from app.commands.serve import WEB_DIR
from model.runs import SHIPPED_MODEL
from service.app import create_app
from service.connections import server_options
from service.settings import Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("GREEDYSIGN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    # A synthetic camera, granted without a prompt: the webcam path runs in CI.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
# GREEDYSIGN_SCREENSHOT_DIR=docs makes the run also write the README's screenshots there.
SCREENSHOT_DIR_ENV = "GREEDYSIGN_SCREENSHOT_DIR"
SERVICE_START_TIMEOUT_S = 60.0


def _browser_unavailable(reason: str) -> None:
    message = f"BROWSER TESTS NOT RUN: {reason}"
    if os.environ.get("GREEDYSIGN_REQUIRE_BROWSER") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def serve(model: Path, **settings) -> Iterator[str]:
    """Runs the service for `model` on a free loopback port; yields its base URL once the
    model is loaded (uvicorn reports started only after the lifespan's start-up)."""
    config = Settings(model=model, device="cpu", **settings)
    app = create_app(config, web_dir=WEB_DIR)
    options = server_options(config)  # as `greedysign serve` runs it
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **options))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))  # port 0: the OS picks a free one, no race to find it
    port = listener.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the service did not start for {model} (see the log above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start within {SERVICE_START_TIMEOUT_S} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.fixture(scope="session")
def start_service() -> Iterator[Callable[..., str]]:
    """start_service(model, **settings) -> base URL. One server per model and settings for
    the whole session; all stop at its end."""
    urls: dict[tuple, str] = {}
    with ExitStack() as stack:

        def start(model: Path, **settings) -> str:
            key = (model, tuple(sorted(settings.items())))
            if key not in urls:
                urls[key] = stack.enter_context(serve(model, **settings))
            return urls[key]

        yield start


@pytest.fixture(scope="session")
def tiny_service(start_service, tiny_model_path: Path) -> str:
    """The random-weight 32 px model: for tests about the page, not about the answers."""
    return start_service(tiny_model_path)


@pytest.fixture(scope="session")
def trained_service(start_service) -> str:
    """The shipped sign model, for tests that need right answers: the same model on every
    machine, whatever runs/ holds."""
    return start_service(SHIPPED_MODEL)


# Module scope, not session: while Playwright's sync API is open it keeps an asyncio loop
# running in the main thread, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_unavailable(
            "Playwright for Python is not installed (it is in the dev extras: "
            "pip install -e '.[dev]')"
        )
    if not CHROMIUM.is_file():
        _browser_unavailable(
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set GREEDYSIGN_CHROMIUM)"
        )
    with sync_playwright() as playwright:
        # Playwright gives each launch a fresh temporary user-data dir: no profile, cache or
        # storage carries over between runs.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def expect(browser: Browser) -> Callable:
    """Playwright's `expect` (retrying assertions), imported only once the browser fixture
    has found Playwright, so that test modules still import without it."""
    from playwright.sync_api import expect

    # Its default 5 s is tight for a first inference on a busy CI machine.
    expect.set_options(timeout=20_000)
    return expect


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (own context: own storage) that fails the test on an uncaught script
    error or on a request to anywhere but the service on 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    script_errors: list[str] = []
    outside_requests: list[str] = []

    def check_request(request) -> None:
        url = urlparse(request.url)
        if url.hostname != "127.0.0.1" and url.scheme not in ("blob", "data"):
            outside_requests.append(request.url)

    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.on("request", check_request)
    yield page
    context.close()
    assert not script_errors, f"script errors in the page: {script_errors}"
    assert not outside_requests, f"the page requested resources elsewhere: {outside_requests}"


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[..., Path]:
    """screenshot(page, name, for_docs=False): saves screenshot-NAME.png in the test's tmp
    dir; with GREEDYSIGN_SCREENSHOT_DIR set, the docs ones are copied there too."""

    def take(page: Page, name: str, for_docs: bool = False) -> Path:
        path = tmp_path / f"screenshot-{name}.png"
        page.screenshot(path=path, full_page=True)
        docs_dir = os.environ.get(SCREENSHOT_DIR_ENV)
        if for_docs and docs_dir:
            shutil.copyfile(path, Path(docs_dir) / path.name)
        return path

    return take
