"""Serving the web app from a test: a real uvicorn server on 127.0.0.1, port 0, in a thread;
and a real headless Chromium (Debian's ``chromium``) driven by Playwright's Python API."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from salesmgr.web.app import make_app

CHROMIUM = os.environ.get("SALESMGR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@contextmanager
def serving(pipeline: str | os.PathLike[str], **options: Any) -> Iterator[str]:
    """The app on ``pipeline`` (a file or a store's address) served on 127.0.0.1 (a port the
    system picks); its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    app = make_app(pipeline, **options)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the web server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def launch_chromium(playwright: Any) -> Any:
    """Chromium, or a failure in CI (CI=true) and a skip elsewhere when it cannot start."""
    try:
        return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as problem:
        message = f"Chromium ({CHROMIUM}) cannot start: {str(problem).splitlines()[0]}"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs it (apt-get install chromium)")
        pytest.skip(message)


def screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the journeys save their screenshots: $SALESMGR_SCREENSHOTS (docs/web makes the
    pictures of docs/web.md), else a temporary folder."""
    chosen = os.environ.get("SALESMGR_SCREENSHOTS")
    if chosen:
        folder = Path(chosen)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")
