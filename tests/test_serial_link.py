"""The serial link layer: whole messages arrive intact and in order over a line that garbles and
loses bytes; a damaged frame is never delivered; a dead line ends the session in bounded time."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salesmgr.errors import SyncError
from salesmgr.plugins.serial_link import (
    ACK,
    DATA,
    DATA_LAST,
    FIN,
    KINDS,
    NAK,
    SYN,
    Frame,
    FrameReader,
    FrameSizer,
    LinkSettings,
    SerialLink,
    accept_link,
    connect_link,
    decode_frame,
    encode_frame,
    wire_size,
)
from salesmgr.testing.faults import Faults, FaultyStream
from salesmgr.testing.links import null_modem

frames = st.builds(
    Frame,
    kind=st.sampled_from(sorted(KINDS - {SYN})),
    seq=st.integers(0, 255),
    ack=st.integers(0, 255),
    tx=st.integers(0, 0xFFFF),
    sack=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=600),
)
sessions = st.integers(0, 0xFFFFFFFF)


def pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in zip(points, points[1:], strict=False):
        yield data[a:b]


@pytest.fixture
def links() -> Iterator[list[SerialLink]]:
    """Every link a test opens, closed afterwards."""
    opened: list[SerialLink] = []
    yield opened
    for link in opened:
        link.close()


def open_pair(
    opened: list[SerialLink],
    link_settings: LinkSettings | None = None,
    desktop_faults: Faults | None = None,
    device_faults: Faults | None = None,
    read_wait: float = 0.05,
) -> tuple[SerialLink, SerialLink]:
    """A desktop link and a device link over an in-memory null-modem cable."""
    desktop_end, device_end = null_modem(read_wait)
    desktop_stream = FaultyStream(desktop_end, desktop_faults) if desktop_faults else desktop_end
    device_stream = FaultyStream(device_end, device_faults) if device_faults else device_end
    accepted: list[SerialLink] = []
    device = threading.Thread(
        target=lambda: accepted.append(accept_link(device_stream, link_settings, timeout=10))
    )
    device.start()
    desktop = connect_link(desktop_stream, link_settings, timeout=10)
    device.join(timeout=10)
    opened.extend([desktop, *accepted])
    assert accepted, "the device never completed the handshake"
    return desktop, accepted[0]


def exchange(a: SerialLink, b: SerialLink, a_to_b: list[bytes], b_to_a: list[bytes]) -> None:
    """Send both ways at once and check each side got exactly the other's messages, in order."""
    received: dict[str, list[bytes]] = {"a": [], "b": []}

    def run(link: SerialLink, outgoing: list[bytes], count: int, key: str) -> None:
        sender = threading.Thread(target=lambda: [link.send(m) for m in outgoing])
        sender.start()
        for _ in range(count):
            received[key].append(link.receive(timeout=60))
        sender.join(timeout=60)

    other = threading.Thread(target=run, args=(b, b_to_a, len(a_to_b), "b"))
    other.start()
    run(a, a_to_b, len(b_to_a), "a")
    other.join(timeout=60)
    assert received["b"] == a_to_b
    assert received["a"] == b_to_a


# --- framing ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    sent=st.lists(frames, max_size=6),
    session=sessions,
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_frames_come_out_as_they_went_in_however_the_bytes_are_split(
    sent: list[Frame], session: int, cuts: list[int]
) -> None:
    wire = b"".join(encode_frame(frame, session) for frame in sent)
    reader = FrameReader(session)
    got = [frame for piece in pieces(wire, cuts) for frame in reader.feed(piece)]
    assert got == sent


@settings(max_examples=300, deadline=None)
@given(frame=frames, session=sessions, at=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_a_frame_with_any_byte_flipped_is_rejected_never_delivered(
    frame: Frame, session: int, at: int, flip: int
) -> None:
    wire = bytearray(encode_frame(frame, session))
    wire[at % len(wire)] ^= flip
    got = FrameReader(session).feed(bytes(wire) + b"\x00")  # a later frame's delimiter follows
    assert got and all(item is None for item in got)


@settings(max_examples=100, deadline=None)
@given(frame=frames, session=sessions, other=sessions)
def test_a_frame_of_another_session_is_rejected(frame: Frame, session: int, other: int) -> None:
    stuffed = encode_frame(frame, other)[1:-1]
    assert (decode_frame(stuffed, session) == frame) == (session == other)


def test_a_syn_is_recognised_in_any_session_since_it_starts_one() -> None:
    syn = Frame(SYN, payload=b"\x01\x02\x03\x04nonce")
    assert decode_frame(encode_frame(syn, 0)[1:-1], session=12345) == syn


def test_garbage_between_frames_costs_only_the_garbage() -> None:
    first, second = Frame(DATA, 1, payload=b"one"), Frame(DATA_LAST, 2, payload=b"two")
    noise = bytes(random.Random(1).randrange(1, 256) for _ in range(300))
    wire = noise + encode_frame(first, 7) + noise + encode_frame(second, 7) + noise
    got = [frame for frame in FrameReader(7).feed(wire) if frame is not None]
    assert got == [first, second]


def test_acknowledgements_are_small() -> None:
    ack = Frame(ACK, 0, 200, 0xFFFF, 0xFFFFFFFF)
    assert len(encode_frame(ack, 0xDEADBEEF)) <= 18
    assert wire_size(1024) - 1024 <= 24  # a full data frame wastes under 2.5%


# --- the frame size follows the line ---------------------------------------------------------


def test_frames_grow_to_full_size_on_a_clean_line() -> None:
    sizer = FrameSizer(largest=1024, grow_after=32)
    assert sizer.size == 16  # start small until the line proves clean
    for _ in range(32 * 8):
        sizer.record(wire_size(sizer.size), arrived=True)
    assert sizer.size == 1024


def test_frames_shrink_when_the_line_garbles_bytes() -> None:
    sizer = FrameSizer(largest=1024, grow_after=32)
    rng = random.Random(5)
    for _ in range(2_000):  # each byte damaged with probability 2%
        wire = wire_size(sizer.size)
        sizer.record(wire, arrived=rng.random() < 0.98**wire)
    assert 16 <= sizer.size <= 64


# --- the link --------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    to_device=st.lists(st.binary(max_size=5_000), max_size=5),
    to_desktop=st.lists(st.binary(max_size=5_000), max_size=5),
    payload_size=st.sampled_from([1, 37, 1024]),
)
def test_messages_of_any_size_arrive_whole_and_in_order_both_ways(
    to_device: list[bytes], to_desktop: list[bytes], payload_size: int
) -> None:
    opened: list[SerialLink] = []
    try:
        desktop, device = open_pair(opened, LinkSettings(payload_size=payload_size))
        exchange(desktop, device, to_device, to_desktop)
    finally:
        for link in opened:
            link.close()


def test_a_noisy_lossy_line_delivers_everything_intact_and_in_order(
    links: list[SerialLink],
) -> None:
    rng = random.Random(11)
    to_device = [rng.randbytes(rng.choice([0, 10, 300, 2_500])) for _ in range(25)]
    to_desktop = [rng.randbytes(rng.choice([0, 10, 300, 2_500])) for _ in range(25)]
    line = Faults(noise=0.01, drop=0.01)  # 2% of bytes garbled or lost, each way
    desktop, device = open_pair(
        links,
        LinkSettings(dead_after=5),
        desktop_faults=Faults(noise=0.01, drop=0.01, seed=1),
        device_faults=Faults(noise=line.noise, drop=line.drop, seed=2),
    )
    exchange(desktop, device, to_device, to_desktop)
    payload = sum(map(len, to_device))
    assert desktop.bytes_sent > 1.3 * payload  # frames really were lost and sent again
    assert desktop.frame_size < 1024  # and the link shrank its frames to get them through


def test_a_very_noisy_line_still_converges_only_slower(links: list[SerialLink]) -> None:
    desktop, device = open_pair(
        links,
        LinkSettings(dead_after=5),
        desktop_faults=Faults(noise=0.02, drop=0.02, seed=3),
        device_faults=Faults(noise=0.02, drop=0.02, seed=4),
    )
    message = os.urandom(3_000)
    exchange(desktop, device, [message], [message[::-1]])


def test_sequence_numbers_wrap_around_without_loss_or_duplicates(
    links: list[SerialLink],
) -> None:
    desktop, device = open_pair(
        links,
        LinkSettings(payload_size=16),
        desktop_faults=Faults(noise=0.005, seed=5),
    )
    messages = [os.urandom(1_000) for _ in range(12)]  # 750 frames: the 8-bit numbers wrap 3 times
    exchange(desktop, device, messages, [b"done"])


def test_a_single_corrupted_byte_is_invisible_to_the_session(links: list[SerialLink]) -> None:
    desktop, device = open_pair(links, device_faults=Faults(corrupt_at=300))
    exchange(desktop, device, [b"request"], [bytes(range(256)) * 8])


def test_frames_left_by_an_earlier_session_are_ignored(links: list[SerialLink]) -> None:
    desktop_end, device_end = null_modem()
    stale = encode_frame(Frame(DATA_LAST, 0, 0, 1, 0, b"stale"), session=0x1234)
    desktop_end.write(stale * 3)  # on the line before the handshake...
    accepted: list[SerialLink] = []
    device = threading.Thread(target=lambda: accepted.append(accept_link(device_end, timeout=5)))
    device.start()
    desktop = connect_link(desktop_end, timeout=5)
    device.join(timeout=5)
    links.extend([desktop, *accepted])
    desktop_end.write(stale)  # ...and after it
    desktop.send(b"fresh")
    assert accepted[0].receive(timeout=5) == b"fresh"
    with pytest.raises(SyncError, match="no message from the desktop"):
        accepted[0].receive(timeout=0.3)


def test_a_new_handshake_ends_the_device_side_of_the_old_session(
    links: list[SerialLink],
) -> None:
    desktop_end, device_end = null_modem()
    accepted: list[SerialLink] = []
    device = threading.Thread(target=lambda: accepted.append(accept_link(device_end, timeout=5)))
    device.start()
    links.append(connect_link(desktop_end, timeout=5))
    device.join(timeout=5)
    links.extend(accepted)
    other_syn = encode_frame(Frame(SYN, payload=b"\x99\x99\x99\x99\x01\x20\x00\x04"), 0)
    desktop_end.write(other_syn)  # a desktop that restarted says hello again
    with pytest.raises(SyncError, match="the desktop started a new session"):
        accepted[0].receive(timeout=5)


def test_close_delivers_what_is_queued_then_the_peer_hears_the_goodbye(
    links: list[SerialLink],
) -> None:
    desktop, device = open_pair(links, desktop_faults=Faults(noise=0.002, seed=6))
    last = os.urandom(20_000)
    desktop.send(b"first")
    desktop.send(last)
    desktop.close()
    assert device.receive(timeout=10) == b"first"
    assert device.receive(timeout=10) == last
    with pytest.raises(SyncError, match="the desktop closed the serial link"):
        device.receive(timeout=5)
    with pytest.raises(SyncError, match="closed"):
        device.send(b"too late")


def test_close_ends_the_readers_wait_for_bytes_instead_of_waiting_it_out(
    links: list[SerialLink],
) -> None:
    # A read returns after 5 s of silence, and the device keeps silent (no keep-alive for 6 s).
    desktop, device = open_pair(links, LinkSettings(dead_after=60), read_wait=5)
    exchange(desktop, device, [b"evening"], [b"done"])
    time.sleep(0.3)  # the last acks are said: the line is quiet
    started = time.monotonic()
    desktop.close()
    assert time.monotonic() - started < 1


def test_a_closed_link_refuses_to_send_or_receive(links: list[SerialLink]) -> None:
    desktop, _ = open_pair(links)
    desktop.close()
    with pytest.raises(SyncError, match="the serial link is closed"):
        desktop.send(b"x")
    with pytest.raises(SyncError):
        desktop.receive(timeout=1)


def test_counters_count_the_bytes_on_the_line(links: list[SerialLink]) -> None:
    desktop, device = open_pair(links)
    exchange(desktop, device, [bytes(5_000)], [b"ok"])
    assert desktop.bytes_sent >= 5_000
    assert device.bytes_received >= 5_000
    assert desktop.bytes_received >= len(b"ok")


# --- a dead line -----------------------------------------------------------------------------

DEAD_AFTER = 1.0
BOUND = DEAD_AFTER + 3.0  # the dead-line time plus generous slack for a loaded machine


def test_connecting_to_a_silent_line_gives_up_with_a_clear_error() -> None:
    desktop_end, _ = null_modem()
    started = time.monotonic()
    with pytest.raises(SyncError, match="no answer from the device within 0.5 s"):
        connect_link(desktop_end, timeout=0.5)
    assert time.monotonic() - started < BOUND


def test_a_device_that_falls_silent_ends_the_session_in_bounded_time(
    links: list[SerialLink],
) -> None:
    desktop, device = open_pair(
        links, LinkSettings(dead_after=DEAD_AFTER), device_faults=Faults(stall_after=200)
    )
    desktop.send(b"request")
    assert device.receive(timeout=5) == b"request"
    started = time.monotonic()
    device.send(os.urandom(5_000))  # its line goes quiet part way through
    with pytest.raises(SyncError, match="the serial line is dead"):
        desktop.receive(timeout=60)
    assert time.monotonic() - started < BOUND


def test_a_desktop_whose_frames_never_arrive_fails_while_sending(
    links: list[SerialLink],
) -> None:
    desktop, _ = open_pair(
        links, LinkSettings(dead_after=DEAD_AFTER), desktop_faults=Faults(stall_after=100)
    )
    started = time.monotonic()
    with pytest.raises(SyncError, match="the serial line is dead"):
        for _ in range(100):
            desktop.send(os.urandom(10_000))
        desktop.receive(timeout=60)
    assert time.monotonic() - started < BOUND


def test_a_cut_line_fails_at_once_on_the_cut_side_and_in_bounded_time_on_the_other(
    links: list[SerialLink],
) -> None:
    desktop, device = open_pair(
        links, LinkSettings(dead_after=DEAD_AFTER), device_faults=Faults(disconnect_after=500)
    )
    desktop.send(b"request")
    assert device.receive(timeout=5) == b"request"
    started = time.monotonic()
    with pytest.raises(SyncError, match="disconnect-after=500"):
        device.send(os.urandom(5_000))
        device.receive(timeout=60)
    with pytest.raises(SyncError, match="the serial line is dead"):
        desktop.receive(timeout=60)
    assert time.monotonic() - started < BOUND


def test_bad_link_settings_are_refused_with_a_clear_error() -> None:
    desktop_end, _ = null_modem()
    with pytest.raises(SyncError, match="window must be 1 to 32"):
        connect_link(desktop_end, LinkSettings(window=40))
    with pytest.raises(SyncError, match="timeout must be positive"):
        connect_link(desktop_end, LinkSettings(dead_after=0))


def test_every_frame_kind_round_trips() -> None:
    for kind in (DATA, DATA_LAST, ACK, NAK, FIN):
        frame = Frame(kind, 3, 4, 5, 6, b"x")
        assert FrameReader(9).feed(encode_frame(frame, 9)) == [frame]


def test_a_message_over_the_protocols_cap_is_refused_and_not_kept(
    links: list[SerialLink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap is the protocol's (as for tcp://), and what arrives past it is dropped, not held
    until the message ends: a peer cannot make this end hold more than the cap."""
    from salesmgr.plugins import serial_link
    from salesmgr.sync.wire import protocol

    assert serial_link.MAX_MESSAGE == protocol.MAX_MESSAGE
    monkeypatch.setattr(serial_link, "MAX_MESSAGE", 16 << 10)
    desktop, device = open_pair(links)
    sender = threading.Thread(target=lambda: desktop.send(bytes(64 << 10)), daemon=True)
    sender.start()
    with pytest.raises(SyncError, match="larger than the protocol allows"):
        device.receive(timeout=30)
    assert sum(map(len, device._parts)) <= 16 << 10
