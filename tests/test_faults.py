"""Fault injection damages exactly what this side writes, as the spec says, and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salesmgr.errors import ConfigError, SalesmgrError, SyncError
from salesmgr.testing.faults import Faults, FaultyStream


class Recorder:
    """A raw stream that keeps what reaches the line and serves canned input."""

    def __init__(self, incoming: bytes = b"") -> None:
        self.line = bytearray()
        self.incoming = bytearray(incoming)
        self.closed = False
        self.timeout: float | None = 1.0

    def read(self, size: int = 1) -> bytes:
        if self.closed:
            raise ValueError("read on a closed stream")
        chunk = bytes(self.incoming[:size])
        del self.incoming[:size]
        return chunk

    def write(self, data: bytes) -> int:
        if self.closed:
            raise ValueError("write on a closed stream")
        self.line += data
        return len(data)

    def close(self) -> None:
        self.closed = True


def write_in_chunks(stream: FaultyStream, data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *[c % (len(data) + 1) for c in cuts]})
    for a, b in zip(points, points[1:], strict=False):
        stream.write(data[a:b])


# --- parsing ---------------------------------------------------------------------------------


def test_parse_reads_every_fault_by_its_command_line_name() -> None:
    faults = Faults.parse(
        ["disconnect-after=100", "stall-after=50", "corrupt-at=7", "noise=0.01", "drop=0.02",
         "seed=3"]
    )
    assert faults == Faults(
        disconnect_after=100, stall_after=50, corrupt_at=7, noise=0.01, drop=0.02, seed=3
    )


def test_parse_accepts_several_faults_in_one_spec() -> None:
    assert Faults.parse(["noise=0.05, seed=9"]) == Faults(noise=0.05, seed=9)


def test_no_spec_means_no_fault() -> None:
    assert not Faults.parse([])
    assert not Faults()
    assert Faults(seed=1)  # any field set counts
    assert Faults(noise=0.1)


def test_str_gives_back_the_specs() -> None:
    faults = Faults(disconnect_after=10, noise=0.5)
    assert str(faults) == "disconnect-after=10,noise=0.5"
    assert Faults.parse(str(faults).split(",")) == faults
    assert str(Faults()) == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("explode=3", "unknown fault 'explode'"),
        ("disconnect-after", "needs a value"),
        ("disconnect-after=", "needs a value"),
        ("disconnect-after=ten", "'ten' is not a whole number"),
        ("corrupt-at=-1", "cannot be negative"),
        ("noise=lots", "'lots' is not a rate"),
        ("drop=1.5", "between 0 and 1"),
        ("noise=0.1,noise=0.2", "given twice"),
    ],
)
def test_a_bad_spec_is_a_one_line_salesmgr_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Faults.parse([spec])
    assert isinstance(caught.value, SalesmgrError)
    assert "\n" not in str(caught.value)


# --- the stream ------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=6))
def test_without_faults_every_byte_passes_unchanged(data: bytes, cuts: list[int]) -> None:
    raw = Recorder()
    write_in_chunks(FaultyStream(raw, Faults()), data, cuts)
    assert raw.line == data


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    at=st.integers(0, 400),
)
def test_disconnect_after_n_bytes_sends_exactly_n_then_cuts_the_line(
    data: bytes, cuts: list[int], at: int
) -> None:
    raw = Recorder()
    stream = FaultyStream(raw, Faults(disconnect_after=at))
    if at > len(data):
        write_in_chunks(stream, data, cuts)
        assert raw.line == data and not raw.closed
        return
    with pytest.raises(SyncError, match="disconnect-after"):
        write_in_chunks(stream, data, cuts)
    assert raw.line == data[:at]
    assert raw.closed and stream.disconnected
    with pytest.raises(SyncError):
        stream.write(b"more")
    with pytest.raises(SyncError):
        stream.read(1)


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    at=st.integers(0, 400),
)
def test_stall_after_n_bytes_silently_swallows_the_rest(
    data: bytes, cuts: list[int], at: int
) -> None:
    raw = Recorder()
    stream = FaultyStream(raw, Faults(stall_after=at))
    write_in_chunks(stream, data, cuts)  # the writer notices nothing
    assert raw.line == data[:at]
    assert not raw.closed


@settings(max_examples=50, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    at=st.integers(0, 299),
)
def test_corrupt_at_flips_exactly_that_byte(data: bytes, cuts: list[int], at: int) -> None:
    at %= len(data)
    raw = Recorder()
    write_in_chunks(FaultyStream(raw, Faults(corrupt_at=at)), data, cuts)
    expected = bytearray(data)
    expected[at] ^= 0xFF
    assert raw.line == expected


def test_noise_garbles_about_the_given_share_of_bytes_and_keeps_length() -> None:
    data = bytes(20_000)
    raw = Recorder()
    FaultyStream(raw, Faults(noise=0.05, seed=1)).write(data)
    assert len(raw.line) == len(data)
    garbled = sum(1 for byte in raw.line if byte)
    assert 700 < garbled < 1300  # 5% of 20,000 is 1,000


def test_drop_loses_about_the_given_share_of_bytes_and_keeps_the_order() -> None:
    data = bytes(range(256)) * 80
    raw = Recorder()
    FaultyStream(raw, Faults(drop=0.05, seed=2)).write(data)
    assert 19_150 < len(raw.line) < 19_750  # 95% of 20,480 is 19,456
    it = iter(data)
    assert all(byte in it for byte in raw.line)  # what arrives is a subsequence


def test_the_same_seed_damages_the_same_way() -> None:
    data = bytes(range(256)) * 10
    lines = []
    for _ in range(2):
        raw = Recorder()
        FaultyStream(raw, Faults(noise=0.1, drop=0.1, seed=42)).write(data)
        lines.append(bytes(raw.line))
    assert lines[0] == lines[1] != data


def test_reads_pass_through_and_attributes_reach_the_raw_stream() -> None:
    raw = Recorder(incoming=b"hello")
    stream = FaultyStream(raw, Faults(noise=1.0, seed=0))
    assert stream.read(5) == b"hello"  # faults only touch this side's output
    stream.timeout = 0.25
    assert raw.timeout == 0.25 and stream.timeout == 0.25
    stream.close()
    assert raw.closed


def test_a_raw_write_returning_none_counts_as_complete() -> None:
    class SendAll:
        def __init__(self) -> None:
            self.line = b""

        def write(self, data: bytes) -> None:
            self.line += bytes(data)

        def read(self, size: int = 1) -> bytes:
            return b""

        def close(self) -> None:
            pass

    raw = SendAll()
    assert FaultyStream(raw, Faults(corrupt_at=0)).write(b"\x00abc") == 4
    assert raw.line == b"\xffabc"
