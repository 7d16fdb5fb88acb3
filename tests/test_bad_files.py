"""Bad pipeline files: every one gets a PipelineFileError naming the file and the problem, in one
line, quickly and in little memory, and the file on disk is left exactly as it was.

Some of these files are damaged (cut short, flipped bytes) and fail the envelope checks; others are
forged with a *correct* CRC and lie in the body (huge counts, out-of-range indexes, duplicated
ids), as a hostile or buggy writer could.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import construct as cs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import sample_pipeline, sealed

from salesmgr import storage
from salesmgr.errors import PipelineFileError
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins import pipeline_codec as v1

ENVELOPE = v1.ENVELOPE_SIZE
GOOD = v1.PipelineCodecV1().encode(sample_pipeline())
GOOD_BODY = GOOD[ENVELOPE:]
MEMORY_LIMIT = 50 * 2**20


def load_error(path: Path) -> str:
    """The one-line problem ``storage.load`` reports for ``path``; checks the file is intact."""
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(PipelineFileError) as caught:
        storage.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and len(message) < 300, message
    if before is not None:
        assert path.read_bytes() == before
    return caught.value.problem


def written(tmp_path: Path, data: bytes, name: str = "bad.smgr") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- damaged files ------------------------------------------------------------------------------


def test_a_file_cut_at_any_offset_is_reported_as_truncated(tmp_path: Path) -> None:
    assert load_error(written(tmp_path, b"")) == "is empty, not a pipeline file"
    for size in range(1, len(GOOD)):
        assert "truncated" in load_error(written(tmp_path, GOOD[:size])), size


@pytest.mark.parametrize("flip", ["all bits", "one bit"])
def test_a_flipped_byte_at_any_offset_is_detected(tmp_path: Path, flip: str) -> None:
    expected = re.compile(
        r"checksum mismatch|not a salesmgr pipeline file|format version|truncated|unexpected bytes"
        r"|declared length"
    )
    for offset in range(len(GOOD)):
        mask = 0xFF if flip == "all bits" else 1 << (offset % 8)
        damaged = bytearray(GOOD)
        damaged[offset] ^= mask
        problem = load_error(written(tmp_path, bytes(damaged)))
        assert expected.search(problem), (offset, problem)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"PK\x03\x04" + bytes(40), "not a salesmgr pipeline file"),
        (b"company,title\nAcme,Anvils\n", "not a salesmgr pipeline file"),
        (GOOD[:8], "truncated (8 bytes)"),
        (GOOD + b"\x00", "1 unexpected bytes after the end"),
        (sealed(GOOD_BODY, major=2, minor=0), "format version 2.0 is newer than this salesmgr"),
        (sealed(GOOD_BODY, major=255, minor=9), "upgrade salesmgr"),
        (sealed(GOOD_BODY, major=0), "unknown format version 0.0"),
        (sealed(GOOD_BODY, flags=1), "envelope flags 0x0001"),
        (GOOD[:12] + struct.pack("<Q", 2**63) + GOOD[20:], "declared length"),
        (GOOD[:12] + struct.pack("<Q", 2**32 - 1) + GOOD[20:], "truncated"),
    ],
    ids=["zip", "csv", "magic only", "trailing byte", "major 2", "major 255", "major 0",
         "envelope flags", "length 2**63", "length 2**32-1"],
)
def test_files_that_are_not_version_1_pipelines(tmp_path: Path, data: bytes, problem: str) -> None:
    assert problem in load_error(written(tmp_path, data))


def test_a_directory_a_missing_file_and_an_unreadable_one(tmp_path: Path) -> None:
    (tmp_path / "folder.smgr").mkdir()
    assert "is a directory" in load_error(tmp_path / "folder.smgr")
    assert "no such file" in load_error(tmp_path / "missing.smgr")
    if os.geteuid() != 0:  # root reads anything
        locked = written(tmp_path, GOOD, "locked.smgr")
        locked.chmod(0)
        assert "permission denied" in load_error(locked)


class SpyParser:
    """The compiled body parser, counting the bodies it is given."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def parse_stream(self, stream: Any) -> Any:
        start = stream.tell()  # what it is given, from where it starts parsing
        self.bodies.append(stream.read())
        stream.seek(start)
        return v1.CompiledBody.parse_stream(stream)


def test_only_verified_bytes_reach_the_compiled_body_parser() -> None:
    assert get_registry().writer_codec().parser is v1.CompiledBody
    spy = SpyParser()
    codec = v1.PipelineCodecV1(parser=spy)
    for offset in range(len(GOOD)):
        damaged = bytearray(GOOD)
        damaged[offset] ^= 0x55
        for data in (bytes(damaged), GOOD[:offset]):
            with pytest.raises(PipelineFileError):
                codec.decode(data, "damaged.smgr")
    assert spy.bodies == []
    codec.decode(GOOD, "good.smgr")
    assert spy.bodies == [GOOD_BODY]


# -- forged bodies with a correct CRC ----------------------------------------------------------


class Raw(bytes):
    """Bytes written as they are in place of a field (a length prefix that lies, bad UTF-8)."""


def forge(declaration: Any, value: Any) -> bytes:
    """Serialise ``value`` field by field after the declaration, trusting every count and
    length it is given: the construct builder would refuse to write such lies."""
    if isinstance(value, Raw):
        return bytes(value)
    inner = declaration.subcon if isinstance(declaration, cs.Renamed) else declaration
    if isinstance(inner, cs.Struct):
        return b"".join(forge(sub, value[sub.name]) for sub in inner.subcons)
    if isinstance(inner, cs.Array):
        return b"".join(forge(inner.subcon, item) for item in value)
    if isinstance(inner, cs.Bytes):
        return bytes(value)
    return inner.build(value)


def sample() -> Any:
    """The good file's body, parsed, to be spoiled by a test."""
    return v1.Body.parse(GOOD_BODY)


def opportunities(body: Any) -> Any:
    return next(s for s in body.sections if s.kind == "opportunity")


def column(body: Any, name: str) -> Any:
    return next(c for c in opportunities(body).columns if c.name == name)


def spoil(body: Any, path: str, value: Any) -> Any:
    """Set ``path`` (``a.b.0.c``; ``opp`` is the opportunity section, ``col:NAME`` a column of
    it) in ``body`` to ``value``."""
    *parents, last = path.split(".")
    node = body
    for part in parents:
        if part == "opp":
            node = opportunities(node)
        elif part.startswith("col:"):
            node = column(body, part[4:])
        elif part.isdigit():
            node = node[int(part)]
        else:
            node = node[part]
    node[last] = value
    return body


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def with_record_dot(replica: int) -> Any:
    body = sample()
    section = opportunities(body)
    section.dots = struct.pack("<IQq", replica, 1, 0) + section.dots[20:]
    return body


def duplicate(what: str) -> Any:
    body = sample()
    section = opportunities(body)
    if what == "record id":
        section.ids = section.ids[:16] * 2
    elif what == "id across sections":
        other = next(s for s in body.sections if s.kind != "opportunity")
        other.ids = section.ids[:16]
    elif what == "replica":
        body.replicas = body.replicas[:16] * 2
        body.replica_count = 2
    elif what == "knowledge":
        body.knowledge_count += 1
        body.knowledge += body.knowledge[:12]
    elif what == "extra key":
        body.extra = [{"key": "k", "value": "1"}, {"key": "k", "value": "2"}]
        body.extra_count = 2
    elif what == "column":
        section.columns.append(section.columns[0])
        section.column_count += 1
    elif what == "section":
        body.sections.append(section)
        body.section_count += 1
    elif what == "field version":
        stage = column(body, "stage")
        stage.overrides *= 2
        stage.override_count *= 2
    return body


def reserved_flags() -> Any:
    body = sample()
    section = opportunities(body)
    section.flags = b"\x02" + section.flags[1:]
    return body


def bad_utf8(where: str) -> Any:
    body = sample()
    if where == "column":
        company = column(body, "company")
        company.data = b"\xed\xa0\x80" + company.data[3:]  # an encoded lone surrogate
    else:
        body.name = Raw(u32(2) + b"\xc3\x28")
    return body


HUGE = 2**32 - 1
FORGERIES: dict[str, tuple[Callable[[], Any], str]] = {
    "record count 2**32-1": (lambda: spoil(sample(), "sections.0.count", HUGE), "runs past"),
    "record count one too many": (
        lambda: spoil(sample(), "sections.0.count", sample().sections[0].count + 1), "runs past"),
    "column data_length 2**60": (lambda: spoil(sample(), "opp.col:company.data_length", 2**60),
                                 "runs past"),
    "column data_length off by one": (
        lambda: spoil(sample(), "opp.col:title.data_length", column(sample(), "title")
                      .data_length + 1), "runs past|do not add up"),
    "lengths not adding up": (lambda: lengths_plus(1), "do not add up"),
    "length 0xFFFFFFFE": (lambda: lengths_set(0xFFFFFFFE), "do not add up"),
    "knowledge_count 2**32-1": (lambda: spoil(sample(), "knowledge_count", HUGE), "runs past"),
    "replica_count 2**32-1": (lambda: spoil(sample(), "replica_count", HUGE), "runs past"),
    "peer_count 2**32-1": (lambda: spoil(sample(), "peer_count", HUGE), "runs past"),
    "extra_count 2**32-1": (lambda: spoil(sample(), "extra_count", HUGE), "runs past"),
    "section_count 2**32-1": (lambda: spoil(sample(), "section_count", HUGE), "runs past"),
    "column_count 2**32-1": (lambda: spoil(sample(), "opp.column_count", HUGE), "runs past"),
    "override_count 2**32-1": (lambda: spoil(sample(), "opp.col:stage.override_count", HUGE),
                               "runs past"),
    "name length 2**32-1": (lambda: spoil(sample(), "name", Raw(u32(HUGE) + b"EMEA")),
                            "runs past"),
    "header replica index out of range": (lambda: spoil(sample(), "replica", 99), "replica index"),
    "record dot replica out of range": (lambda: with_record_dot(99), "replica index"),
    "override replica out of range": (lambda: override(replica=HUGE), "replica index"),
    "override record index out of range": (lambda: override(index=HUGE), "record index"),
    "knowledge replica out of range": (
        lambda: spoil(sample(), "knowledge", struct.pack("<IQ", 7, 1)), "replica index"),
    "duplicated record ids": (lambda: duplicate("record id"), "appears twice"),
    "one id in two sections": (lambda: duplicate("id across sections"), "appears twice"),
    "duplicated replica ids": (lambda: duplicate("replica"), "appears twice"),
    "duplicated knowledge entries": (lambda: duplicate("knowledge"), "appears twice"),
    "duplicated extra keys": (lambda: duplicate("extra key"), "appears twice"),
    "duplicated columns": (lambda: duplicate("column"), "appears twice"),
    "duplicated sections": (lambda: duplicate("section"), "two sections"),
    "two versions of one field": (lambda: duplicate("field version"), "two versions"),
    "reserved record flags": (reserved_flags, "record flags"),
    "lone surrogate in a column": (lambda: bad_utf8("column"), "UTF-8"),
    "bad UTF-8 in the name": (lambda: bad_utf8("name"), "UTF-8"),
}


def lengths_plus(delta: int) -> Any:
    body = sample()
    title = column(body, "title")
    first = struct.unpack_from("<I", title.lengths)[0]
    title.lengths = u32(first + delta) + title.lengths[4:]
    return body


def lengths_set(value: int) -> Any:
    body = sample()
    title = column(body, "title")
    title.lengths = u32(value) + title.lengths[4:]
    return body


def override(index: int = 0, replica: int = 0) -> Any:
    body = sample()
    stage = column(body, "stage")
    stage.overrides = struct.pack("<IIQq", index, replica, 5, 0)
    stage.override_count = 1
    return body


def assert_refused_cheaply(data: bytes, problem: str) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PipelineFileError) as caught:
            v1.PipelineCodecV1().decode(data, "forged.smgr")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5
    assert peak < MEMORY_LIMIT, f"{peak / 2**20:.0f} MB"
    message = str(caught.value)
    assert message.startswith("forged.smgr: corrupt pipeline file: "), message
    assert re.search(problem, message), message
    assert outcome(v1.Body, data) == caught.value.problem  # the interpreted parser agrees


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_body_with_a_correct_crc_is_refused_cheaply(name: str, tmp_path: Path) -> None:
    make, problem = FORGERIES[name]
    data = sealed(forge(v1.Body, make()))
    assert_refused_cheaply(data, problem)
    assert "corrupt pipeline file" in load_error(written(tmp_path, data))


@pytest.mark.parametrize("body", [b"", b"\x00" * 10, GOOD_BODY + b"\x00", GOOD_BODY[:-1]],
                         ids=["empty", "ten zeros", "one byte too many", "one byte short"])
def test_a_body_of_the_wrong_size_with_a_correct_crc_is_refused(body: bytes) -> None:
    assert_refused_cheaply(sealed(body), "runs past|unexplained bytes after the body")


def test_the_forger_writes_the_good_file_when_nothing_is_spoiled() -> None:
    assert forge(v1.Body, sample()) == GOOD_BODY


# -- any damage at all ----------------------------------------------------------------------


def outcome(parser: Any, data: bytes) -> Any:
    """The pipeline read from ``data``, or the problem reported."""
    try:
        return v1.PipelineCodecV1(parser=parser).decode(data, "fuzz.smgr")
    except PipelineFileError as error:
        assert error.problem.startswith("corrupt pipeline file: ")
        return error.problem


windows = st.tuples(st.integers(0, len(GOOD_BODY) - 1),
                    st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32 - 2, 0x7F]))
edits = st.tuples(st.integers(0, len(GOOD_BODY) - 1), st.integers(0, 255))


@settings(max_examples=300, deadline=None)
@given(st.lists(windows, max_size=3), st.lists(edits, max_size=3),
       st.none() | st.integers(0, len(GOOD_BODY)))
def test_any_forged_body_is_either_read_faithfully_or_refused(windows, edits, cut) -> None:
    """Whatever a writer puts behind a correct CRC: no other exception, the compiled and the
    interpreted parser agree, and anything accepted is written back and read back the same."""
    body = bytearray(GOOD_BODY)
    for offset, number in windows:
        body[offset : offset + 4] = struct.pack("<I", number)[: len(body) - offset]
    for offset, byte in edits:
        body[offset] = byte
    data = sealed(bytes(body[:cut]))
    compiled, interpreted = outcome(v1.CompiledBody, data), outcome(v1.Body, data)
    assert compiled == interpreted
    if not isinstance(compiled, str):
        codec = v1.PipelineCodecV1()
        assert codec.decode(codec.encode(compiled), "again") == compiled


# -- through the command line ---------------------------------------------------------------


CLI_CASES = {
    "not a pipeline": (b"hello\n", "not a salesmgr pipeline file"),
    "cut short": (GOOD[: len(GOOD) // 2], "truncated"),
    "flipped byte": (GOOD[:-5] + bytes([GOOD[-5] ^ 0x10]) + GOOD[-4:], "checksum mismatch"),
    "newer major": (sealed(GOOD_BODY, major=2), "newer than this salesmgr"),
    "forged count": (sealed(forge(v1.Body, spoil(sample(), "sections.0.count", HUGE))),
                     "corrupt pipeline file"),
    "empty": (b"", "empty"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_salesmgr_list_reports_a_bad_file_in_one_line(case: str, tmp_path: Path) -> None:
    data, problem = CLI_CASES[case]
    path = written(tmp_path, data)
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from salesmgr.cli.group import main; main(sys.argv[1:])",  # noqa: E501
         "list", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode == PipelineFileError.exit_code, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert str(path) in lines[0] and problem in lines[0], lines[0]
    assert "Traceback" not in run.stderr
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.smgr"]


def test_salesmgr_list_reports_a_directory_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from salesmgr.cli.group import main; main(sys.argv[1:])",  # noqa: E501
         "list", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode != 0
    assert len(run.stderr.splitlines()) == 1 and str(tmp_path) in run.stderr, run.stderr
