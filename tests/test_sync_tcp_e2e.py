"""End to end over real loopback sockets: the emulator runs in a subprocess exactly as a user
starts it, the desktop side is the ``salesmgr`` command line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import content, desktop_file, one_error_line, salesmgr, self_signed_certificate

from salesmgr import storage
from salesmgr.emulator.process import EmulatorProcess, emulator_command
from salesmgr.errors import ErrorCode
from salesmgr.plugins.transport_tcp import LENGTH
from salesmgr.sync.wire import auth
from salesmgr.sync.wire.protocol import Challenge, Error, Hello, MessageType, build, parse

SECRET = "evening-sync-secret-Vq8Lm2Rx"


class Emulator(EmulatorProcess):
    """``salesmgr emulator serve`` in a subprocess (the class integrators' fixtures use)."""

    def __init__(self, folder: Path, device: Path, *args: str, on: str = "tcp://127.0.0.1:0",
                 secret: str = SECRET) -> None:
        super().__init__(emulator_command(device, on, extra=args), folder, secret=secret)

    def wait_for_output(self, text: str, *, stream: str = "stderr") -> None:
        assert self.output_contains(text, 10, stream=stream), getattr(self, stream)


@pytest.fixture
def emulators(tmp_path: Path) -> Iterator[list[Emulator]]:
    started: list[Emulator] = []
    yield started
    for emulator in started:
        emulator.stop()


# --- the working day -------------------------------------------------------------------------


def test_morning_load_a_day_of_edits_and_the_evening_sync(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path)
    device = tmp_path / "device.pipe"  # a new device: nothing loaded yet
    emulators.append(emulator := Emulator(tmp_path, device))
    loaded = salesmgr("load", desk, "--to", emulator.url, "--secret", SECRET)
    assert loaded.exit_code == 0, loaded.output
    assert "5 records sent" in loaded.output
    assert content(device) == content(desk)

    morning = storage.load(desk).records
    ids = sorted(morning)
    names = {rid: record.values["company"] for rid, record in morning.items()}
    # At the office, through the command line...
    office = salesmgr("add", desk, "--company", "Office lead", "--title", "Chairs")
    assert office.exit_code == 0, office.output
    assert salesmgr("edit", desk, ids[0], "--stage", "Proposal").exit_code == 0
    assert salesmgr("delete", desk, ids[1]).exit_code == 0
    # ...and on the road, editing the device file while the emulator runs.
    road = salesmgr("add", device, "--company", "Road lead", "--title", "Desks")
    assert road.exit_code == 0, road.output
    assert salesmgr("edit", device, ids[2], "--value", "1200").exit_code == 0
    assert salesmgr("delete", device, ids[3]).exit_code == 0
    # Both sides add a line to the same notes: merged, not a conflict.
    assert salesmgr("edit", desk, ids[4], "--notes", "met\ncalled back").exit_code == 0
    assert salesmgr("edit", device, ids[4], "--notes", "visited\nmet").exit_code == 0

    before = (desk.read_bytes(), device.read_bytes())
    preview = salesmgr("sync", desk, "--from", emulator.url, "--secret", SECRET, "--dry-run")
    assert preview.exit_code == 0, preview.output
    assert "desktop: 1 added, 2 changed, 1 deleted" in preview.output
    assert "dry run: nothing was written on either side" in preview.output
    assert (desk.read_bytes(), device.read_bytes()) == before

    evening = salesmgr("sync", desk, "--from", emulator.url, "--secret", SECRET)
    assert evening.exit_code == 0, evening.output
    assert "desktop: 1 added, 2 changed, 1 deleted" in evening.output
    assert "device:  1 added, 2 changed, 1 deleted" in evening.output
    assert "bytes sent" in evening.output

    merged = content(desk)
    assert merged == content(device)
    live = {rid: values for rid, (kind, deleted, values) in merged.items()
            if kind == "opportunity" and not deleted}
    assert sorted(v["company"] for v in live.values()) == sorted(
        [names[ids[0]], names[ids[2]], names[ids[4]], "Office lead", "Road lead"]
    )
    assert live[ids[0]]["stage"] == "Proposal" and live[ids[2]]["value"] == "1200.00"
    assert live[ids[4]]["notes"] == "visited\nmet\ncalled back"

    before = (desk.read_bytes(), device.read_bytes())
    again = salesmgr("sync", desk, "--from", emulator.url, "--secret", SECRET, "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.output)
    assert second["records_received"] == 0 and second["records_sent"] == 0
    assert second["bytes_sent"] + second["bytes_received"] < 1500
    assert (desk.read_bytes(), device.read_bytes()) == before

    assert emulator.stop() == 0  # SIGTERM: a clean stop
    assert "stopped after 4 sessions (0 failed)" in emulator.stdout
    assert content(device) == merged


def test_a_site_config_names_the_device_and_where_the_secret_is(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path)
    emulators.append(emulator := Emulator(tmp_path, tmp_path / "device.pipe", "--once"))
    (tmp_path / "salesmgr.toml").write_text(
        f'[sync]\nurl = "{emulator.url}"\nsecret-env = "SPRING_SECRET"\ntimeout = 5\n'
    )
    result = salesmgr("load", desk, env={"SPRING_SECRET": SECRET})
    assert result.exit_code == 0, result.output
    assert emulator.process.wait(10) == 0  # --once: one session, then it stops


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[sync\nurl =", "not valid TOML"),
        ("[sync]\nport = 5\n", "unknown [sync] setting 'port'"),
        ("[sync]\ntimeout = -1\n", "timeout must be a positive number"),
        ("[sync]\nurl = 5\n", "url must be a non-empty string"),
        ("[sync]\noptions = 3\n", "[sync.options] must be a table"),
    ],
)
def test_a_bad_site_config_is_a_one_line_error(tmp_path: Path, toml: str, problem: str) -> None:
    desk = desktop_file(tmp_path)
    (tmp_path / "salesmgr.toml").write_text(toml)
    before = desk.read_bytes()
    result = salesmgr("sync", desk, "--secret", SECRET)
    assert result.exit_code == 2
    assert problem in one_error_line(result)
    assert desk.read_bytes() == before


def test_a_config_given_on_the_command_line_must_exist(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path)
    result = salesmgr("sync", desk, "--config", tmp_path / "nope.toml", "--secret", SECRET)
    assert result.exit_code == 2
    assert "no such config file" in one_error_line(result)


def test_a_missing_secret_is_a_one_line_error(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path)
    result = salesmgr("sync", desk, "--from", "tcp://127.0.0.1:9", env={"SALESMGR_SECRET": ""})
    assert result.exit_code == 2
    assert "no pairing secret" in one_error_line(result)


@pytest.mark.parametrize("weak", ["s3cret", "correct horse", "a" * 40, "Tr0ub4dor&3"])
def test_a_weak_secret_is_refused_at_both_ends_before_anything_happens(
    tmp_path: Path, weak: str
) -> None:
    """A weak secret can be guessed offline from one handshake, drop or seal: refused."""
    desk = desktop_file(tmp_path)
    before = desk.read_bytes()
    for args, env in (
        (("sync", desk, "--from", "tcp://127.0.0.1:9", "--secret", weak), None),
        (("load", desk, "--to", "tcp://127.0.0.1:9"), {"SALESMGR_SECRET": weak}),
        (("emulator", "serve", tmp_path / "device.pipe", "--on", "tcp://127.0.0.1:0",
          "--secret", weak), None),
    ):
        result = salesmgr(*args, env=env)
        assert result.exit_code == 2
        assert "the pairing secret is too weak" in one_error_line(result)
        assert "salesmgr pair" in one_error_line(result)
    assert desk.read_bytes() == before and not (tmp_path / "device.pipe").exists()


def test_pair_prints_a_strong_secret_both_ends_accept(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    first, second = salesmgr("pair").stdout.strip(), salesmgr("pair").stdout.strip()
    assert first != second and len(first) >= 43 and "\n" not in first
    assert auth.strength_bits(first) >= auth.MIN_STRENGTH_BITS
    desk = desktop_file(tmp_path)
    emulators.append(emulator := Emulator(tmp_path, tmp_path / "device.pipe", secret=first))
    loaded = salesmgr("load", desk, "--to", emulator.url, env={"SALESMGR_SECRET": first})
    assert loaded.exit_code == 0, loaded.output


def test_no_device_listening_is_a_one_line_error(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = salesmgr("sync", desk, "--from", f"tcp://127.0.0.1:{port}", "--secret", SECRET)
    assert result.exit_code == 7
    assert "connection refused" in one_error_line(result)


# --- refusals: a clear error on both ends, nothing changed ------------------------------------


def test_a_wrong_secret_changes_nothing_on_either_side(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path)
    device = tmp_path / "device.pipe"
    emulators.append(emulator := Emulator(tmp_path, device))
    assert salesmgr("load", desk, "--to", emulator.url, "--secret", SECRET).exit_code == 0
    assert salesmgr("add", device, "--company", "Road", "--title", "x").exit_code == 0
    before = (desk.read_bytes(), device.read_bytes())
    wrong = "a-wrong-guess-of-the-secret-Tz91"
    result = salesmgr("sync", desk, "--from", emulator.url, "--secret", wrong)
    assert result.exit_code == 7
    assert "authentication failed" in one_error_line(result)
    emulator.wait_for_output("authentication failed")
    assert (desk.read_bytes(), device.read_bytes()) == before


def test_a_device_holding_another_pipeline_changes_nothing(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path, name="Spring")
    other = desktop_file(tmp_path, name="Autumn")
    device = tmp_path / "device.pipe"
    emulators.append(emulator := Emulator(tmp_path, device))
    assert salesmgr("load", desk, "--to", emulator.url, "--secret", SECRET).exit_code == 0
    before = (other.read_bytes(), device.read_bytes())
    result = salesmgr("sync", other, "--from", emulator.url, "--secret", SECRET)
    assert result.exit_code == 7
    assert "another pipeline, 'Spring'" in one_error_line(result)
    emulator.wait_for_output("another pipeline")
    assert (other.read_bytes(), device.read_bytes()) == before


def exchange(url: str, data: bytes, *, framed: bool = True) -> bytes:
    """Send raw bytes to the emulator; return the first framed message it answers, or b""."""
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(LENGTH.pack(len(data)) + data if framed else data)
        head = b""
        while len(head) < LENGTH.size:
            chunk = sock.recv(LENGTH.size - len(head))
            if not chunk:
                return b""
            head += chunk
        (length,) = LENGTH.unpack(head)
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            assert chunk
            body += chunk
        return body


def test_a_desktop_of_a_newer_protocol_is_told_and_nothing_changes(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    device = tmp_path / "device.pipe"
    shutil.copyfile(desktop_file(tmp_path), device)
    before = device.read_bytes()
    emulators.append(emulator := Emulator(tmp_path, device))
    answer = parse(exchange(emulator.url, build(Hello(bytes(32), "salesmgr 9"), 0, version=2)))
    assert isinstance(answer.message, Error) and answer.message.code == ErrorCode.VERSION
    assert "protocol" in answer.message.text
    emulator.wait_for_output("the peer speaks sync protocol 2")
    assert device.read_bytes() == before


def test_garbage_on_the_socket_is_refused_and_the_emulator_carries_on(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path)
    device = tmp_path / "device.pipe"
    emulators.append(emulator := Emulator(tmp_path, device))
    assert salesmgr("load", desk, "--to", emulator.url, "--secret", SECRET).exit_code == 0
    before = device.read_bytes()
    # Another protocol altogether: its first bytes read as an impossible message length.
    http = exchange(emulator.url, b"GET / HTTP/1.1\r\nHost: device\r\n\r\n", framed=False)
    refusal = parse(http).message
    assert isinstance(refusal, Error) and "more than the protocol allows" in refusal.text
    emulator.wait_for_output("more than the protocol allows")
    # A well-framed message full of noise: refused, and the desktop is told why.
    answer = parse(exchange(emulator.url, b"\xff" + os.urandom(599))).message
    assert isinstance(answer, Error) and answer.code == ErrorCode.PROTOCOL
    assert "not a salesmgr sync message" in answer.text
    assert device.read_bytes() == before
    assert salesmgr("sync", desk, "--from", emulator.url, "--secret", SECRET).exit_code == 0


class FakeDevice:
    """A listening socket on loopback that answers the desktop's first message with ``reply``."""

    def __init__(self, reply: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.url = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.reply = reply
        self.heard: list[bytes] = []
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(self.reply)
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.heard.append(chunk)

    def close(self) -> None:
        self.thread.join(15)
        self.sock.close()


def test_a_device_of_a_newer_protocol_is_told_and_nothing_changes(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path)
    before = desk.read_bytes()
    newer = build(Challenge(bytes(32), bytes(32), "salesmgr 9"), 0, version=2)
    fake = FakeDevice(LENGTH.pack(len(newer)) + newer)
    result = salesmgr("sync", desk, "--from", fake.url, "--secret", SECRET, "--timeout", "5")
    fake.close()
    assert result.exit_code == 7
    assert "the peer speaks sync protocol 2, this salesmgr speaks 1" in one_error_line(result)
    told = b"".join(fake.heard)
    messages = []
    while told:
        (length,) = LENGTH.unpack(told[:4])
        messages.append(parse(told[4 : 4 + length]).message)
        told = told[4 + length :]
    assert isinstance(messages[-1], Error) and messages[-1].code == ErrorCode.VERSION
    assert desk.read_bytes() == before


def test_garbage_from_the_device_is_a_clear_error(tmp_path: Path) -> None:
    desk = desktop_file(tmp_path)
    before = desk.read_bytes()
    fake = FakeDevice(b"\x00\x00\x00\x40" + b"HTTP/1.1 400 Bad Request\r\n" * 3)
    result = salesmgr("sync", desk, "--from", fake.url, "--secret", SECRET, "--timeout", "5")
    fake.close()
    assert result.exit_code == 7
    assert "not a salesmgr sync message" in one_error_line(result)
    assert desk.read_bytes() == before


def test_a_stalling_device_times_out_and_changes_nothing(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path)
    device = tmp_path / "device.pipe"
    shutil.copyfile(desk, device)  # loaded the old way: a copy of the file
    assert salesmgr("add", device, "--company", "Road", "--title", "x").exit_code == 0
    before = (desk.read_bytes(), device.read_bytes())
    emulators.append(emulator := Emulator(tmp_path, device, "--fault", "stall-after=300"))
    started = time.monotonic()
    result = salesmgr("sync", desk, "--from", emulator.url, "--secret", SECRET, "--timeout", "1")
    assert time.monotonic() - started < 5
    assert result.exit_code == 7
    assert "no answer from the device" in one_error_line(result)
    assert (desk.read_bytes(), device.read_bytes()) == before


def test_a_cut_cable_is_finished_by_the_next_sync(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    desk = desktop_file(tmp_path)
    device = tmp_path / "device.pipe"
    emulators.append(emulator := Emulator(tmp_path, device))
    assert salesmgr("load", desk, "--to", emulator.url, "--secret", SECRET).exit_code == 0
    emulator.stop()
    assert salesmgr("add", device, "--company", "Road", "--title", "x").exit_code == 0
    assert salesmgr("add", desk, "--company", "Office", "--title", "y").exit_code == 0
    emulators.append(cut := Emulator(tmp_path, device, "--once", "--fault", "disconnect-after=700"))
    result = salesmgr("sync", desk, "--from", cut.url, "--secret", SECRET, "--timeout", "5")
    assert result.exit_code == 7
    assert cut.process.wait(10) != 0
    emulators.append(again := Emulator(tmp_path, device))
    result = salesmgr("sync", desk, "--from", again.url, "--secret", SECRET)
    assert result.exit_code == 0, result.output
    merged = content(desk)
    assert merged == content(device)
    names = sorted(v["company"] for _, (k, d, v) in merged.items() if k == "opportunity" and not d)
    assert names == sorted([f"Company {i}" for i in range(5)] + ["Office", "Road"])


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_with_the_certificate_checked_against_the_sites_ca(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    desk = desktop_file(tmp_path)
    device = tmp_path / "device.pipe"
    emulators.append(
        emulator := Emulator(
            tmp_path, device, "--tls-cert", str(cert), "--tls-key", str(key),
            on="tcps://127.0.0.1:0",
        )
    )
    assert emulator.url.startswith("tcps://127.0.0.1:")
    (tmp_path / "salesmgr.toml").write_text(
        f'[sync]\nurl = "{emulator.url}"\n\n[sync.options]\ntls-ca = "{cert.name}"\n'
    )
    env = {"SALESMGR_SECRET": SECRET}
    assert salesmgr("load", desk, env=env).exit_code == 0
    assert salesmgr("add", device, "--company", "Road", "--title", "x").exit_code == 0
    result = salesmgr("sync", desk, env=env)
    assert result.exit_code == 0, result.output
    assert content(desk) == content(device)
    plain = emulator.url.replace("tcps://", "tcp://")
    refused = salesmgr("sync", desk, "--from", plain, "--timeout", "2", env=env)
    assert refused.exit_code == 7  # a plain-TCP desktop cannot talk to a TLS device
    one_error_line(refused)


def test_messages_on_the_wire_are_framed_protocol_messages(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    emulators.append(emulator := Emulator(tmp_path, tmp_path / "device.pipe"))
    answer = parse(exchange(emulator.url, build(Hello(bytes(32), "probe"), 0)))
    assert answer.message.TYPE is MessageType.CHALLENGE and not answer.sealed
