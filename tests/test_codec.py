"""The pipeline file codec, version 1: what goes in comes out, byte for byte, unknowns included."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import opportunity_inputs, pipelines, sample_pipeline, sealed, uuids

from salesmgr import storage
from salesmgr.errors import ValidationError
from salesmgr.model.pipeline import DELETED, MAX_CLOCK_MS, MIN_CLOCK_MS, Dot, Pipeline, Record
from salesmgr.pieces import ChecksumWriter, crc32, crc32_of
from salesmgr.plugin.manager import get_registry
from salesmgr.plugins import pipeline_codec as v1
from salesmgr.plugins.pipeline_codec import Body, PipelineCodecV1

DOCS = Path(__file__).resolve().parent.parent / "docs" / "file-format.md"
compiled, interpreted = PipelineCodecV1(), PipelineCodecV1(parser=Body)
SETTINGS = settings(max_examples=100, deadline=None)


# -- round trips ------------------------------------------------------------------------------


@SETTINGS
@given(pipelines())
def test_any_pipeline_decodes_to_an_equal_pipeline(pipeline: Pipeline) -> None:
    assert compiled.decode(compiled.encode(pipeline), "test") == pipeline


@SETTINGS
@given(pipelines())
def test_encoding_is_deterministic_and_decode_then_encode_gives_the_same_bytes(
    pipeline: Pipeline,
) -> None:
    data = compiled.encode(pipeline)
    assert compiled.encode(pipeline) == data
    assert compiled.encode(compiled.decode(data, "test")) == data


@settings(max_examples=50, deadline=None)
@given(pipelines(), st.randoms(use_true_random=False))
def test_the_order_of_dicts_in_memory_does_not_change_the_bytes(pipeline: Pipeline, rnd) -> None:
    def shuffled(mapping: dict) -> dict:
        items = list(mapping.items())
        rnd.shuffle(items)
        return dict(items)

    reordered = Pipeline(
        pipeline.pipeline_id, pipeline.name, pipeline.owner, pipeline.currency,
        pipeline.replica_id, pipeline.home, shuffled(pipeline.knowledge),
        {r: shuffled(k) for r, k in shuffled(pipeline.peers).items()},
        {
            i: Record(r.kind, r.id, shuffled(r.values), r.dot, shuffled(r.field_dots), r.deleted)
            for i, r in shuffled(pipeline.records).items()
        },
        shuffled(pipeline.extra),
    )
    assert compiled.encode(reordered) == compiled.encode(pipeline)


@SETTINGS
@given(pipelines())
def test_compiled_and_interpreted_body_parsers_agree(pipeline: Pipeline) -> None:
    data = compiled.encode(pipeline)
    body = data[v1.ENVELOPE_SIZE :]
    assert v1.CompiledBody.parse(body) == Body.parse(body)
    assert interpreted.decode(data, "test") == compiled.decode(data, "test") == pipeline


@settings(max_examples=30, deadline=None)
@given(st.lists(opportunity_inputs(), min_size=1, max_size=5), st.data())
def test_pipelines_made_through_the_api_round_trip(inputs: list[dict[str, str]], data) -> None:
    opportunity = get_registry().record_type("opportunity")
    pipeline = Pipeline.create("api", "Ana", "EUR")
    ids = [pipeline.add(opportunity, values)[0].id for values in inputs]
    for record_id in data.draw(st.lists(st.sampled_from(ids), max_size=3), label="edited"):
        pipeline.update(opportunity, record_id, data.draw(opportunity_inputs(), label="edit"))
    for record_id in data.draw(st.sets(st.sampled_from(ids), max_size=2), label="deleted"):
        pipeline.delete(record_id)
    assert compiled.decode(compiled.encode(pipeline), "test") == pipeline


def test_a_real_pipeline_round_trips_through_storage(tmp_path: Path) -> None:
    pipeline = sample_pipeline()
    path = tmp_path / "emea.smgr"
    storage.save(pipeline, path)
    loaded = storage.load(path)
    assert loaded == pipeline
    assert path.read_bytes() == compiled.encode(loaded)


def test_empty_text_and_absent_value_stay_different() -> None:
    pipeline = sample_pipeline()
    deal = next(pipeline.live("opportunity"))
    deal.values["contact"] = ""
    deal.values.pop("phone", None)
    back = compiled.decode(compiled.encode(pipeline), "test").records[deal.id]
    assert back.values["contact"] == ""
    assert "phone" not in back.values


def test_odd_unicode_survives() -> None:
    odd = [
        "", "\x00", "nul\x00inside", "\r\n\t", "ß", "İı", "e\u0301", "👩‍👩‍👧‍👦", "\U0010ffff",
        "\ufeffbom", "עברית", "中文", "\u200b", "a" * 3 + "\uffff",
    ]
    pipeline = sample_pipeline()
    deal = next(pipeline.live("opportunity"))
    for n, text in enumerate(odd):
        deal.values[f"field {text} {n}"] = text
    pipeline.extra.update({text: text for text in odd})
    pipeline.name = "".join(odd)
    assert compiled.decode(compiled.encode(pipeline), "test") == pipeline


def test_maximal_lengths_counters_and_clocks() -> None:
    """Every built-in text field at its length limit in 4-byte characters, every counter at both
    of its 64-bit limits, and every clock at both ends of the calendar."""
    registry = get_registry()
    pipeline = Pipeline.create("max", "o", "EUR")
    top = Dot(2**64 - 1, pipeline.replica_id, MAX_CLOCK_MS)
    bottom = Dot(0, pipeline.replica_id, MIN_CLOCK_MS)
    for name, record_id in [("opportunity", "f" * 8 + "-ffff" * 3 + "-" + "f" * 12),
                            ("activity", "0" * 8 + "-0000" * 3 + "-" + "0" * 12)]:
        rtype = registry.record_type(name)
        longest = {f.name: "𝄞" * f.kind.max_length for f in rtype.fields if f.kind.name == "text"}
        rtype.normalize(longest)  # accepted: no longer value can be entered
        record = Record(name, record_id, longest, top, dict.fromkeys(longest, bottom))
        pipeline.records[record.id] = record
    pipeline.knowledge[pipeline.replica_id] = 2**64 - 1
    assert compiled.decode(compiled.encode(pipeline), "test") == pipeline


def test_many_replicas_and_field_versions() -> None:
    replicas = [v1.uuid_text(i.to_bytes(16, "big")) for i in range(300)]
    pipeline = Pipeline(replicas[7], replica_id=replicas[299])
    pipeline.knowledge = {r: i for i, r in enumerate(replicas)}
    pipeline.peers = {r: {replicas[0]: i} for i, r in enumerate(replicas[:50])}
    for i, replica in enumerate(replicas):
        record = Record("opportunity", v1.uuid_text((10**6 + i).to_bytes(16, "big")),
                        {"company": f"c{i}"}, Dot(i, replica, i))
        record.field_dots = {"stage": Dot(i + 1, replicas[-1 - i], 0), DELETED: Dot(1, replica)}
        record.deleted = True
        pipeline.records[record.id] = record
    assert compiled.decode(compiled.encode(pipeline), "test") == pipeline


def test_an_empty_pipeline_round_trips() -> None:
    pipeline = Pipeline.create()
    assert compiled.decode(compiled.encode(pipeline), "test") == pipeline


# -- forward compatibility --------------------------------------------------------------------


R0 = "0e3b4c1a-7a0f-4d52-9d8c-2b1f2a3c4d5e"
DEAL = "5b1f4a6e-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
CONTRACT = "9f8e7d6c-5b4a-4321-8fed-cba987654321"


def foreign_column(name: str, values: list[str | None], overrides=()) -> dict:
    """A column exactly as the format describes it, written without the codec under test."""
    raws = [None if v is None else v.encode() for v in values]
    data = b"".join(r for r in raws if r is not None)
    return {
        "name": name,
        "lengths": b"".join(struct.pack("<I", 0xFFFFFFFF if r is None else len(r)) for r in raws),
        "data_length": len(data),
        "data": data,
        "override_count": len(overrides),
        "overrides": b"".join(struct.pack("<IIQq", *o) for o in overrides),
    }


def foreign_section(kind: str, record_id: str, columns: list[dict], counter: int) -> dict:
    return {
        "kind": kind,
        "count": 1,
        "ids": bytes.fromhex(record_id.replace("-", "")),
        "flags": b"\x00",
        "dots": struct.pack("<IQq", 0, counter, 1_750_000_000_000),
        "column_count": len(columns),
        "columns": columns,
    }


def newer_file() -> bytes:
    """What a salesmgr 1.3 with a ``region`` field and a ``contract`` record type would write."""
    sections = [
        foreign_section("contract", CONTRACT, [
            foreign_column("amount", ["125000.00"]),
            foreign_column("signed_by", ["Zoë Ångström 署名"], [(0, 0, 3, 1_750_000_000_500)]),
        ], 2),
        foreign_section("opportunity", DEAL, [
            foreign_column("company", ["Acme"]),
            foreign_column("region", ["EMEA – Nordics"], [(0, 0, 4, 1_750_000_000_900)]),
            foreign_column("stage", ["Lead"]),
            foreign_column("title", ["Anvils"]),
        ], 1),
    ]
    body = Body.build({
        "pipeline_id": bytes(range(16)),
        "replica": 0,
        "name": "Nordics",
        "owner": "Ana",
        "currency": "EUR",
        "home": "",
        "replica_count": 1,
        "replicas": bytes.fromhex(R0.replace("-", "")),
        "knowledge_count": 1,
        "knowledge": struct.pack("<IQ", 0, 4),
        "peer_count": 0,
        "peers": [],
        "extra_count": 1,
        "extra": [{"key": "sync.device_model", "value": "Pixel 9 ✓"}],
        "section_count": len(sections),
        "sections": sections,
    })
    return sealed(body, major=1, minor=3)


def test_unknown_columns_sections_and_header_entries_survive_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "newer.smgr"
    path.write_bytes(newer_file())
    registry = get_registry()
    assert "contract" not in registry.record_types
    assert "region" not in registry.record_type("opportunity").by_name

    pipeline = storage.load(path)
    pipeline.update(registry.record_type("opportunity"), DEAL, {"stage": "Won"})
    storage.save(pipeline, path)
    again = storage.load(path)

    deal, contract = again.records[DEAL], again.records[CONTRACT]
    assert deal.values["stage"] == "Won"
    assert deal.values["region"].encode() == "EMEA – Nordics".encode()
    assert deal.field_dots["region"] == Dot(4, R0, 1_750_000_000_900)
    assert contract.kind == "contract"
    assert contract.values == {"amount": "125000.00", "signed_by": "Zoë Ångström 署名"}
    assert contract.field_dots == {"signed_by": Dot(3, R0, 1_750_000_000_500)}
    assert contract.dot == Dot(2, R0, 1_750_000_000_000)
    assert again.extra == {"sync.device_model": "Pixel 9 ✓"}

    # The unknown section is written back byte for byte: nothing in it was touched.
    before = Body.parse(newer_file()[v1.ENVELOPE_SIZE :]).sections[0]
    after = Body.parse(path.read_bytes()[v1.ENVELOPE_SIZE :]).sections[0]
    assert after.kind == "contract" and after == before


@settings(max_examples=60, deadline=None)
@given(pipelines(kinds=st.text(min_size=1, max_size=8).filter(lambda k: k != "opportunity")),
       st.dictionaries(st.text(max_size=8).filter(lambda n: n not in {"company", "title",
                                                                      "stage"}),
                       st.text(), min_size=1, max_size=4),
       uuids)
def test_unknown_fields_and_types_survive_a_read_edit_save_cycle(
    pipeline: Pipeline, unknown: dict[str, str], deal_id: str
) -> None:
    # An edit needs a counter left to tick: a replica at 2**64 - 1 can write nothing more.
    assume(pipeline.counter < 2**64 - 1)
    registry = get_registry()
    opportunity = registry.record_type("opportunity")
    pipeline.records.pop(deal_id, None)
    deal = Record("opportunity", deal_id, {"company": "Acme", "title": "Anvils", **unknown},
                  Dot(1, pipeline.replica_id))
    pipeline.records[deal_id] = deal
    before = compiled.decode(compiled.encode(pipeline), "test")

    before.update(opportunity, deal_id, {"stage": "Won"})
    after = compiled.decode(compiled.encode(before), "test")

    for name, text in unknown.items():
        assert after.records[deal_id].values[name] == text
    assert after.extra == pipeline.extra
    for record_id, record in pipeline.records.items():
        if record_id != deal_id:
            assert after.records[record_id] == record


def test_any_minor_version_of_major_1_is_read() -> None:
    body = newer_file()[v1.ENVELOPE_SIZE :]
    for minor in (0, 1, 255):
        assert compiled.decode(sealed(body, 1, minor), "x").records[DEAL].values["region"]


# -- what version 1 cannot hold ---------------------------------------------------------------


@pytest.mark.parametrize("spoil", ["uppercase id", "short id", "surrogate", "huge counter"])
def test_what_the_format_cannot_hold_is_refused_before_the_file_is_touched(
    spoil: str, tmp_path: Path
) -> None:
    path = tmp_path / "p.smgr"
    pipeline = sample_pipeline()
    storage.save(pipeline, path)
    original = path.read_bytes()
    deal = next(pipeline.live("opportunity"))
    if spoil == "uppercase id":
        pipeline.records[deal.id.upper()] = Record("note", deal.id.upper(), {}, deal.dot)
    elif spoil == "short id":
        pipeline.records["1234"] = Record("note", "1234", {}, deal.dot)
    elif spoil == "surrogate":
        deal.values["notes"] = "half a pair \ud800"
    else:
        deal.field_dots["notes"] = Dot(2**64, deal.dot.replica)
    with pytest.raises(ValidationError, match="cannot save"):
        storage.save(pipeline, path)
    assert path.read_bytes() == original


# -- the documentation follows the declarations ------------------------------------------------


def declared_fields() -> list[tuple[str, str]]:
    structs = {"Envelope": v1.Envelope, "Body": Body, "Section": v1.Section, "Column": v1.Column,
               "PeerKnowledge": v1.PeerKnowledge}
    return [(owner, sub.name) for owner, s in structs.items() for sub in s.subcons if sub.name]


@pytest.mark.parametrize(("owner", "name"), declared_fields())
def test_every_declared_field_is_documented(owner: str, name: str) -> None:
    doc = DOCS.read_text(encoding="utf-8")
    assert f"`{name}`" in doc, f"docs/file-format.md does not describe {owner}.{name}"


def test_the_documented_example_is_what_the_encoder_writes() -> None:
    doc = DOCS.read_text(encoding="utf-8")
    example = doc[doc.index("## Example") :]
    start = example.index("```text") + len("```text")
    block = example[start : example.index("```", start)]
    documented = bytes.fromhex(" ".join(line[6:54] for line in block.strip().splitlines()))
    replica = "00000000-0000-4000-8000-00000000000a"
    pipeline = Pipeline("11111111-2222-4333-8444-555555555555", "Demo", "Ana", "EUR",
                        replica_id=replica, knowledge={replica: 2})
    deal = Record("opportunity", "99999999-0000-4000-8000-000000000001",
                  {"company": "Acme", "stage": "Won"}, Dot(1, replica, 1767600000000),
                  {"stage": Dot(2, replica, 1767600060000)})
    pipeline.records[deal.id] = deal
    assert documented == compiled.encode(pipeline)
    assert f"{len(documented)} bytes" in example
    assert f"`{v1.MAGIC.decode()}`" in doc and f"## Envelope ({v1.ENVELOPE_SIZE} bytes)" in doc


@settings(max_examples=200)
@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1), st.integers(1, 700))
def test_the_checksum_is_zlibs_crc32_however_it_is_computed(
    data: bytes, start: int, piece: int
) -> None:
    """The format's checksum is zlib's CRC-32 (docs/file-format.md); the faster implementation
    the reader and writer use gives the same number, whole, continued and in pieces."""
    expected = zlib.crc32(data, start)
    assert crc32(data, start) == expected
    assert crc32(memoryview(data)[piece:], crc32(data[:piece], start)) == expected
    assert crc32_of(io.BytesIO(data), len(data), start) == expected
    written = ChecksumWriter(io.BytesIO(), start)
    for at in range(0, len(data), piece):
        written.write(data[at : at + piece])
    assert written.crc == expected
