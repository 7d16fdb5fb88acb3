"""``salesmgr web PIPELINE``: serve the Sales Manager pages on this machine, for a pipeline file
or any store's address (``sqlite:///office.db#emea``, ``postgresql://host/db#emea``)."""

from __future__ import annotations

import secrets
import socket
import webbrowser
from pathlib import Path

import click

from salesmgr.cli.group import PIPELINE
from salesmgr.errors import ConfigError
from salesmgr.storage import FILE_SCHEME, canonical, open_pipeline, scheme_of
from salesmgr.web.security import needs_login

DEFAULT_ON = "127.0.0.1:8765"


def parse_on(on: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); port 0 lets the system pick."""
    host, sep, port = on.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--on {on}: give HOST:PORT, e.g. {DEFAULT_ON}")
    return host, int(port)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as problem:
        sock.close()
        raise ConfigError(f"--on {host}:{port}: cannot listen there ({problem.strerror})") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@click.command("web")
@click.argument("pipeline", type=PIPELINE)
@click.option("--on", "on", default=DEFAULT_ON, show_default=True, metavar="HOST:PORT",
              help="Where to serve; any address but loopback needs the login token printed "
                   "at start.")
@click.option("--open", "open_browser", is_flag=True, help="Open the board in a browser.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Site config for the Sync page (default: salesmgr.toml beside PIPELINE's "
                   "file, else in this folder).")
def web(pipeline: str, on: str, open_browser: bool, config_path: Path | None) -> None:
    """Serve the pipeline in a browser: board, list, forecast, agenda, conflicts, sync, import.

    PIPELINE is a file or a store's address (sqlite:///office.db#emea,
    postgresql://HOST/DB#emea).  Every change goes through the same checks, and the same lock
    and transaction, as the commands.  Stop it with Ctrl-C."""
    import uvicorn

    from salesmgr.web.app import make_app

    host, port = parse_on(on)
    open_pipeline(pipeline)  # a missing or damaged pipeline is one line now, not a page later
    token = secrets.token_urlsafe(24) if needs_login(host) else None
    sock = bind(host, port)
    url = address(host, sock.getsockname()[1])
    app = make_app(pipeline, host=host, login_token=token, config_path=config_path)
    shown = pipeline if scheme_of(pipeline) == FILE_SCHEME else canonical(pipeline)  # no password
    click.echo(f"serving {shown} on {url}/ (Ctrl-C stops)")
    if token is not None:
        click.echo(f"login token: {token}")
        click.echo(f"sign in at {url}/login?token={token}")
    if open_browser:
        webbrowser.open(f"{url}/login?token={token}" if token else f"{url}/")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
