"""The web app over real HTTP (a uvicorn server on 127.0.0.1:0): it escapes every value, every
form needs its CSRF token, other addresses need the login token, a CLI edit and a browser edit
made at the same moment both land, and ``salesmgr web`` starts and fails like a command."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Addresses
from helpers import one_error_line, salesmgr
from webserver import serving

from salesmgr import storage
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.web.app import make_app
from salesmgr.web.security import needs_login

HOSTILE = [
    '<script>alert("pwned")</script>',
    "\"'><img src=x onerror=alert(1)>",
    "O'Brien & \"Sons\" <Ltd>",
    "{{7*7}} {% raw %}",
]


@dataclass
class Visitor:
    """A browser without a browser: cookies kept, the CSRF token read from the last page."""

    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)
    csrf: str = ""

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def open(self, path: str, data: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, body, headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', text)
        if found:
            self.csrf = found.group(1)
        return status, text

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        return self.open(path, {"csrf": self.csrf, **data})


def hostile_pipeline(folder: Path, address: str | None = None) -> tuple[Path, str]:
    """Every free-text field of a deal, an activity, a conflict and the pipeline's name hold
    markup and quotes; returns the file (or ``address``, a store's, when given) and the deal's
    id."""
    pipeline = Pipeline.create(HOSTILE[0], HOSTILE[2], "EUR")
    registry = get_registry()
    rtype = registry.record_type("opportunity")
    texts = {spec.name: HOSTILE[i % len(HOSTILE)] for i, spec in enumerate(rtype.fields)
             if type(spec.kind).__name__ in ("Text", "Email")}
    deal, _ = pipeline.add(rtype, {**texts, "value": "100", "next_action_date": "2020-01-01"})
    pipeline.add(registry.record_type("activity"),
                 {"opportunity_id": deal.id, "kind": "note", "summary": HOSTILE[1]})
    pipeline.add(registry.record_type("conflict"), {
        "record_id": deal.id, "record_kind": "opportunity", "label": HOSTILE[0],
        "field": "contact", "desktop_value": HOSTILE[1], "device_value": HOSTILE[2],
        "winner": "desktop", "value": HOSTILE[1], "policy": "field-merge", "status": "decided",
    })
    path = folder / "hostile.smp"
    storage.create_pipeline(pipeline, address or path)
    (folder / "salesmgr.toml").write_text('[sync]\nurl = "tcp://127.0.0.1:9/<script>x"\n')
    return Path(address) if address else path, deal.id


def test_every_page_shows_markup_and_quotes_as_text(tmp_path: Path) -> None:
    path, deal = hostile_pipeline(tmp_path)
    csv = tmp_path / "hostile.csv"
    csv.write_text("company,title,stage\n" + "\n".join(
        f'"{h.replace(chr(34), chr(34) * 2)}",t,{"<b>Won</b>" if i == 1 else "Lead"}'
        for i, h in enumerate(HOSTILE)) + "\n")
    with serving(path) as base:
        visitor = Visitor(base)
        pages = {}
        for address in ("/", "/list", f"/opportunities/{deal}", "/conflicts", "/conflicts?all=1",
                        "/sync", "/import", "/opportunities/new", "/list?q=%3Cscript%3E",
                        "/forecast", "/forecast?by=owner", "/forecast?by=month", "/agenda",
                        "/agenda?days=3650&owner=%3Cscript%3E", "/list?sort=%3Cscript%3E",
                        "/opportunities/%3Cscript%3Ealert(1)%3C%2Fscript%3E"):
            pages[address] = visitor.open(address)[1]
        pages["import preview"] = upload(visitor, csv)
    for address, page in pages.items():
        body = page.split("<body>", 1)[1]
        assert "<script>" not in body.replace('<script src="/static/', ""), address
        assert "<img" not in body and "onerror=alert(1)>" not in body, address
        assert "<Ltd>" not in body and "<b>Won" not in body, address
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in pages["/"]
    assert "O&#39;Brien &amp; &#34;Sons&#34; &lt;Ltd&gt;" in pages[f"/opportunities/{deal}"]
    assert "{{7*7}}" in pages[f"/opportunities/{deal}"]  # a template is never made of data
    assert "&lt;b&gt;Won&lt;/b&gt;" in pages["import preview"]  # the refused value, as text


def upload(visitor: Visitor, csv: Path) -> str:
    """POST a CSV to the import page as a browser's form would (multipart)."""
    boundary = "salesmgr-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n'
             f"{visitor.csrf}\r\n".encode(),
             f'--{boundary}\r\nContent-Disposition: form-data; name="csv"; '
             f'filename="{csv.name}"\r\nContent-Type: text/csv\r\n\r\n'.encode()
             + csv.read_bytes() + b"\r\n", f"--{boundary}--\r\n".encode()]
    request = urllib.request.Request(
        visitor.base + "/import", b"".join(parts),
        {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with visitor.opener.open(request, timeout=30) as response:
        text: str = response.read().decode()
        return text


def post_routes() -> list[str]:
    app = make_app(Path("unused.smp"))
    return sorted({route.path.replace("{record_id}", "x").replace("{conflict_id}", "x")
                   for route in app.routes if "POST" in (getattr(route, "methods", None) or ())})


def test_every_form_is_refused_without_its_csrf_token(tmp_path: Path) -> None:
    path, deal = hostile_pipeline(tmp_path)
    before = path.read_bytes()
    routes = post_routes()
    assert {"/opportunities/new", "/sync", "/import", "/import/confirm", "/login",
            "/opportunities/x/stage", "/conflicts/x/resolve"} <= set(routes)
    with serving(path) as base:
        visitor, stranger = Visitor(base), Visitor(base)
        visitor.open("/")
        stranger.open("/")
        assert stranger.csrf != visitor.csrf  # a token belongs to one browser's session
        for route in routes:
            address = route.replace("/x/", f"/{deal}/")
            assert visitor.open(address, {"stage": "Won"})[0] == 403, route
            forged = {"csrf": stranger.csrf, "stage": "Won", "field.company": "X"}
            assert visitor.open(address, forged)[0] == 403, route
        # With its own token the same form works.
        assert visitor.post(f"/opportunities/{deal}/stage", {"stage": "Won"})[0] == 200
    assert storage.load(path).records[deal].values["stage"] == "Won"
    assert before != path.read_bytes()


def test_another_address_needs_the_login_token_and_never_shows_it(tmp_path: Path) -> None:
    assert not any(map(needs_login, ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost")))
    assert all(map(needs_login, ("0.0.0.0", "192.168.1.20", "::", "salesbox.local")))
    path, _ = hostile_pipeline(tmp_path)
    token = "a-long-random-login-token"
    with serving(path, host="0.0.0.0", login_token=token) as base:
        visitor = Visitor(base)
        status, page = visitor.open("/")
        assert status == 200 and "Login token" in page  # redirected to the login form
        assert visitor.open("/list")[1] == page
        assert visitor.post("/login", {"token": "wrong"})[0] == 403
        status, page = visitor.post("/login", {"token": token})
        assert status == 200 and "data-board" in page
        for address in ("/", "/list", "/sync", "/conflicts"):
            assert token not in visitor.open(address)[1]
        other = Visitor(base)
        assert "data-board" in other.open(f"/login?token={token}")[1]
        assert "data-board" not in Visitor(base).open("/login?token=nope")[1]


def test_pages_answer_only_on_the_address_they_were_started_on(tmp_path: Path) -> None:
    path, _ = hostile_pipeline(tmp_path)
    with serving(path) as base:
        visitor = Visitor(base)
        assert visitor.open("/")[0] == 200
        # A page on evil.example whose name resolves to 127.0.0.1 (DNS rebinding) gets nothing.
        status, text = visitor.open("/", headers={"Host": "evil.example:8765"})
        assert status == 421 and "<" not in text


def test_a_cli_edit_and_a_browser_edit_made_together_both_land(
    tmp_path: Path, address: Addresses
) -> None:
    """On a file, and on a SQLite and a PostgreSQL store: the browser's changes go through the
    store's hold and transaction, as the command line's do."""
    where = address("hostile")
    _, deal = hostile_pipeline(tmp_path, where)
    with serving(where) as base:
        visitor = Visitor(base)
        _, form = visitor.open(f"/opportunities/{deal}")
        was = dict(re.findall(r'name="was\.(\w+)" value="([^"]*)"', form))
        # Meanwhile, on the command line, someone changes the phone.
        assert salesmgr("edit", where, deal, "--phone", "+1 555 0100").exit_code == 0
        fields = {f"field.{name}": value for name, value in was.items()}
        fields = {k: v.replace("&#34;", '"').replace("&#39;", "'").replace("&lt;", "<")
                  .replace("&gt;", ">").replace("&amp;", "&") for k, v in fields.items()}
        sent = {**fields, "field.title": "Bigger fleet"}
        sent.update({f"was.{name}": value for name, value in fields.items()})
        sent = {k.replace("was.field.", "was."): v for k, v in sent.items()}
        status, page = visitor.post(f"/opportunities/{deal}", sent)
        assert status == 200 and "Saved" in page
        visitor.open("/")
        visitor.open("/list?sort=-value")
        # And at the same moment: three CLI adds and three browser adds.
        script = Path(sys.executable).with_name("salesmgr")
        clis = [subprocess.Popen([str(script), "add", where, "--company", f"CLI {i}",
                                  "--title", "t"], stdout=subprocess.DEVNULL)
                for i in range(3)]
        webs = [threading.Thread(target=visitor.post, args=(
            "/opportunities/new", {"field.company": f"Web {i}", "field.title": "t"}))
            for i in range(3)]
        for thread in webs:
            thread.start()
        for thread in webs:
            thread.join(60)
        assert [p.wait(60) for p in clis] == [0, 0, 0]
        # Pages remember what they computed for one version of the pipeline, no longer.
        board, listed = visitor.open("/")[1], visitor.open("/list?sort=-value")[1]
        for company in ("CLI 0", "CLI 1", "CLI 2", "Web 0", "Web 1", "Web 2"):
            assert company in board and company in listed
    values = storage.open_pipeline(where).records[deal].values
    assert (values["phone"], values["title"]) == ("+1 555 0100", "Bigger fleet")
    companies = {r.values["company"] for r in storage.open_pipeline(where).live("opportunity")}
    assert {"CLI 0", "CLI 1", "CLI 2", "Web 0", "Web 1", "Web 2"} <= companies


def test_a_bad_form_value_gets_the_command_lines_message_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path, deal = hostile_pipeline(tmp_path)
    before = path.read_bytes()
    with serving(path) as base:
        visitor = Visitor(base)
        visitor.open("/opportunities/new")
        for option, value in (("value", "twelve"), ("currency", "EUX"), ("stage", "Maybe"),
                              ("close_date", "2026-13-45"), ("probability", "140")):
            cli = salesmgr("add", path, "--company", "A", "--title", "B",
                           f"--{option.replace('_', '-')}", value)
            message = one_error_line(cli).removeprefix("salesmgr: ")
            status, page = visitor.post("/opportunities/new", {
                "field.company": "A", "field.title": "B", f"field.{option}": value})
            assert status == 400
            shown = re.search(r'role="alert"[^>]*>([^<]*)<', page)
            assert shown is not None
            assert shown.group(1).replace("&#39;", "'") == message
        status, page = visitor.post(f"/opportunities/{deal}/log", {"kind": "fax", "summary": "x"})
        assert "Not logged: activity field &#39;kind&#39;" in page
    assert path.read_bytes() == before


def test_the_readme_way_keep_the_demos_day_and_open_it_in_the_browser(tmp_path: Path) -> None:
    """``salesmgr demo --keep day`` then ``salesmgr web day/desk.smp --open``."""
    day = tmp_path / "day"
    assert salesmgr("demo", "--transport", "tcp", "--keep", day).exit_code == 0
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"  # what $BROWSER names is what --open starts
    browser.write_text(f'#!/bin/sh\necho "$1" > "{opened}"\n')
    browser.chmod(0o755)
    script = Path(sys.executable).with_name("salesmgr")
    server = subprocess.Popen(
        [str(script), "web", str(day / "desk.smp"), "--open", "--on", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BROWSER": str(browser)})
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        url = re.search(r"on (http://127\.0\.0\.1:\d+)/", first)
        assert url is not None, first
        status, page = Visitor(url.group(1)).open("/")
        assert status == 200 and page.count("data-card=") == len(
            list(storage.load(day / "desk.smp").live("opportunity")))
        assert "login token" not in first
        deadline = time.monotonic() + 10
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text().strip() == url.group(1) + "/"
    finally:
        server.terminate()
        server.wait(20)


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_salesmgr_web_serves_a_pipeline_in_a_database(
    tmp_path: Path, address: Addresses
) -> None:
    """``salesmgr web sqlite:///office.db#emea`` (or a PostgreSQL address) as a user runs it:
    its pages show the pipeline, a resolve and a delete made there are the database's."""
    where = address("emea")
    _, deal = hostile_pipeline(tmp_path, where)
    script = Path(sys.executable).with_name("salesmgr")
    server = subprocess.Popen([str(script), "web", where, "--on", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert first.startswith(f"serving {storage.canonical(where)} on http://127.0.0.1:")
        url = re.search(r"on (http://127\.0\.0\.1:\d+)/", first)
        assert url is not None, first
        visitor = Visitor(url.group(1))
        status, page = visitor.open("/")
        assert status == 200 and page.count("data-card=") == 1 and deal in page
        # Settling a conflict and deleting the deal land in the database.
        [conflict] = storage.open_pipeline(where).live("conflict")
        status, _ = visitor.post(f"/conflicts/{conflict.id}/resolve", {"take": "device"})
        assert status == 200
        status, _ = visitor.post(f"/opportunities/{deal}/delete", {})
        assert status == 200
    finally:
        server.terminate()
        server.wait(20)
    stored = storage.open_pipeline(where)
    assert stored.records[deal].deleted
    assert stored.records[conflict.id].values["status"] == "resolved"
    assert stored.records[conflict.id].values["resolution"] == "device"


def test_salesmgr_web_fails_in_one_line(tmp_path: Path) -> None:
    path, _ = hostile_pipeline(tmp_path)
    missing = salesmgr("web", tmp_path / "nope.smp")
    assert missing.exit_code == 3
    assert one_error_line(missing) == f"salesmgr: {tmp_path / 'nope.smp'}: no such file"
    bad = salesmgr("web", path, "--on", "localhost")
    assert bad.exit_code == 2
    assert one_error_line(bad) == "salesmgr: --on localhost: give HOST:PORT, e.g. 127.0.0.1:8765"


def test_only_the_web_command_imports_the_web_package(tmp_path: Path) -> None:
    path, _ = hostile_pipeline(tmp_path)
    code = ("import sys, json; from salesmgr.cli.group import main\n"
            "try:\n    main(['list', sys.argv[1], '--json'])\nexcept SystemExit: pass\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('salesmgr.web', "
            "'starlette', 'uvicorn', 'jinja2')))), file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=60)
    # The plugin module that adds the command is loaded; the app, Starlette and friends are not.
    assert json.loads(run.stderr.strip().splitlines()[-1]) == [
        "salesmgr.web", "salesmgr.web.plugin"]
