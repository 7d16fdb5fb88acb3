"""Properties of the merge, checked by a random office: a desktop and two devices — and any copy
of their files made by hand, each a replica of its own (a `Bundle`) — editing one pipeline and
merging any pair, in any order, with any policy.

After every step: (1) a merged pair holds equal user data; (2) no change that did not conflict is
lost; (3) every conflict's losing value is in the conflict log; (4) merging again changes nothing;
(5) a deleted record comes back only with a concurrent edit, and (7) under the default policy an
edit concurrent with a deletion does bring it back; (6) a round of merges in any order brings
every replica to the same content — and at the end of every run a full sync of every pair does.
"""

from __future__ import annotations

import copy
import itertools
import uuid

import hypothesis.strategies as st
import pytest
from hypothesis import assume, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from salesmgr import storage
from salesmgr.merge.engine import merge_files
from salesmgr.model.pipeline import BASE_PREFIX, DELETED, Pipeline, Record, Sources, use_sources
from salesmgr.plugin.manager import get_registry
from salesmgr.testing.compare import user_data

REGISTRY = get_registry()
OPPORTUNITY = REGISTRY.record_type("opportunity")
ACTIVITY = REGISTRY.record_type("activity")
REPLICAS = ("desktop", "device1", "device2")  # the office opens with these
MAX_REPLICAS = 5  # with up to two copies made by hand
# The policies under which a record deleted on one side and edited on the other comes back.
COMES_BACK = ("field-merge",)
POLICIES = tuple(sorted(REGISTRY.policies))
EDITABLE = {
    "phone": st.sampled_from(["555-0100", "555-0101", "555-0199", ""]),
    "stage": st.sampled_from(["Lead", "Qualified", "Proposal", "Won", "Lost"]),
    "value": st.sampled_from(["100.00", "2500.50", "99999.99", ""]),
    "probability": st.sampled_from(["0", "40", "100"]),
    "contact": st.sampled_from(["Ann", "Bob", "Zoë", ""]),
}
WORDS = st.sampled_from(["visit", "call back", "price ok", "send quote", "ünïcode ✓"])


class CountingSources(Sources):
    """Ids and clock ticks that repeat run after run, so hypothesis can replay and shrink."""

    def __init__(self) -> None:
        self.ids = 0
        self.clock = 1_800_000_000_000

    def new_id(self) -> str:
        self.ids += 1
        return str(uuid.UUID(int=self.ids))

    def now_ms(self) -> int:
        self.clock += 1000
        return self.clock


def knows(knowledge: dict[str, int], dot) -> bool:
    return knowledge.get(dot.replica, 0) >= dot.counter


def edited_since_deleted(a: Pipeline, b: Pipeline) -> set[str]:
    """Records deleted on one side and edited on the other, neither side having seen the other's
    write: the deletion and the edit are concurrent."""
    found = set()
    for record_id, mine in a.records.items():
        theirs = b.records.get(record_id)
        if theirs is None or mine.kind == "conflict":
            continue
        for gone, kept, gone_side, kept_side in ((mine, theirs, a, b), (theirs, mine, b, a)):
            if not gone.deleted or kept.deleted:
                continue
            if kept_side.knows(gone.dot_of(DELETED)):
                continue  # the live side has seen this deletion (and brought the record back)
            writes = [kept.dot] + [d for n, d in kept.field_dots.items() if n != DELETED]
            if any(not gone_side.knows(d) for d in writes):
                found.add(record_id)
    return found


class Office(RuleBasedStateMachine):
    replicas = Bundle("replicas")  # names of the pipeline files in the office

    def __init__(self) -> None:
        super().__init__()
        self.previous_sources = use_sources(CountingSources())
        self.files: dict[str, Pipeline] = {}
        # (replica, replica, record id): an edit met a concurrent deletion in their last merge
        self.must_be_back: list[tuple[str, str, str]] = []

    @initialize(target=replicas)
    def open_the_office(self):  # type: ignore[no-untyped-def]
        origin = Pipeline.create("Shared", "ann", "EUR")
        for company in ("Acme", "Beta"):
            origin.add(OPPORTUNITY, {"company": company, "title": "Deal", "notes": "start\n"})
        for name in REPLICAS:
            replica = copy.deepcopy(origin)
            replica.fork(f"test:{name}")  # a copied file becomes a replica of its own
            self.files[name] = replica
        return multiple(*REPLICAS)

    @precondition(lambda self: len(self.files) < MAX_REPLICAS)
    @rule(target=replicas, source=replicas)
    def copy_a_file(self, source: str) -> str:
        """A file copied by hand (a new laptop, a mailed attachment) becomes a replica of its
        own when it is opened away from home, knowing everything its source knew."""
        name = f"copy{len(self.files)}"
        copied = storage.decode(storage.encode(self.files[source]), name)
        copied.fork(f"test:{name}")
        self.files[name] = copied
        return name

    # -- helpers -----------------------------------------------------------------------
    def live_ids(self, name: str, kind: str = "opportunity") -> list[str]:
        return sorted(r.id for r in self.files[name].live(kind))

    def merge_two(self, a: str, b: str, policy: str = "field-merge"):  # type: ignore[no-untyped-def]
        """Merge two files, remembering which records an edit must have brought back."""
        concurrent = edited_since_deleted(self.files[a], self.files[b])
        result = merge_files(self.files[a], self.files[b], policy=policy)
        if policy in COMES_BACK:
            self.must_be_back.extend((a, b, record_id) for record_id in sorted(concurrent))
            # Checked at once: a later merge in the same round may rightly delete it again.
            self.an_edit_concurrent_with_a_deletion_comes_back()
        return result

    # -- edits ---------------------------------------------------------------------------
    @rule(who=replicas, company=st.sampled_from(["Acme", "Cobalt", "Dyna"]))
    def add(self, who: str, company: str) -> None:
        self.files[who].add(OPPORTUNITY, {"company": company, "title": "New"})

    @rule(who=replicas, data=st.data())
    def edit(self, who: str, data: st.DataObject) -> None:
        ids = self.live_ids(who)
        if not ids:
            return
        record_id = data.draw(st.sampled_from(ids))
        name = data.draw(st.sampled_from(sorted(EDITABLE)))
        value = data.draw(EDITABLE[name])
        self.files[who].update(OPPORTUNITY, record_id, {name: value})

    @rule(who=replicas, data=st.data(), word=WORDS, append=st.booleans())
    def edit_notes(self, who: str, data: st.DataObject, word: str, append: bool) -> None:
        ids = self.live_ids(who)
        if not ids:
            return
        record = self.files[who].records[data.draw(st.sampled_from(ids))]
        old = record.values.get("notes", "")
        notes = old + word + "\n" if append else word + "\n" + old.partition("\n")[2]
        self.files[who].update(OPPORTUNITY, record.id, {"notes": notes})

    @rule(who=replicas, data=st.data())
    def delete(self, who: str, data: st.DataObject) -> None:
        ids = self.live_ids(who)
        if ids:
            self.files[who].delete(data.draw(st.sampled_from(ids)))

    @rule(who=replicas, data=st.data(), word=WORDS)
    def log_call(self, who: str, data: st.DataObject, word: str) -> None:
        ids = self.live_ids(who)
        if ids:
            target = data.draw(st.sampled_from(ids))
            self.files[who].add(
                ACTIVITY, {"opportunity_id": target, "kind": "call", "summary": word}
            )

    @rule(who=replicas)
    def save_and_reopen(self, who: str) -> None:
        """The file format keeps every version: a replica survives a save and a load."""
        replica = self.files[who]
        again = storage.decode(storage.encode(replica), who)
        assert again == replica
        self.files[who] = again

    # -- merges --------------------------------------------------------------------------
    @rule(desktop_name=replicas, device_name=replicas, policy=st.sampled_from(POLICIES))
    def merge(self, desktop_name: str, device_name: str, policy: str) -> None:
        assume(desktop_name != device_name)
        desktop, device = self.files[desktop_name], self.files[device_name]
        before_desktop, before_device = copy.deepcopy(desktop), copy.deepcopy(device)
        result = self.merge_two(desktop_name, device_name, policy)

        # (1) equal user data after a merge
        assert user_data(desktop) == user_data(device)
        # records are never dropped, only deleted
        assert set(before_desktop.records) | set(before_device.records) <= set(desktop.records)

        log = {r.id: r for r in desktop.live("conflict")}
        # (3) every conflict's both values are in the conflict log, on both sides
        for entry in result.report.conflicts:
            logged = log[entry.id].values
            assert logged.get("desktop_value") == entry.desktop_value
            assert logged.get("device_value") == entry.device_value
            assert device.records[entry.id].values == logged
        conflicted = {(e.record_id, e.field) for e in result.report.conflicts}
        duplicated = {e.record_id for e in result.report.conflicts if e.winner == "both"}

        # (2) a change one side made that the other had not seen survives unless it conflicted
        for mine, other in ((before_desktop, before_device), (before_device, before_desktop)):
            for record in mine.records.values():
                if record.kind == "conflict":
                    continue
                merged = desktop.records[record.id]
                self.check_not_lost(record, other, merged, conflicted, duplicated)

        # (5) no resurrection without a concurrent edit: either this merge weighed a deletion
        # against an edit, or the other side carries such an earlier, logged decision.
        undeletes = {r.values["record_id"] for r in log.values() if r.values["field"] == DELETED}
        for rid, merged in desktop.records.items():
            for side, other in ((before_desktop, before_device), (before_device, before_desktop)):
                old = side.records.get(rid)
                if old is None or not old.deleted or merged.deleted:
                    continue
                theirs = other.records.get(rid)
                assert (rid, DELETED) in conflicted or (
                    theirs is not None
                    and not knows(side.knowledge, theirs.dot_of(DELETED))
                    and rid in undeletes
                ), f"{rid} came back without a concurrent edit"

        # (4) merging again at once changes nothing
        data = user_data(desktop)
        again = merge_files(desktop, device, policy=policy)
        assert again.report.changes_nothing, again.report.lines()
        assert user_data(desktop) == data == user_data(device)

    def check_not_lost(
        self,
        record: Record,
        other: Pipeline,
        merged: Record,
        conflicted: set[tuple[str, str]],
        duplicated: set[str],
    ) -> None:
        for name in set(record.values) | set(record.field_dots):
            if name.startswith(BASE_PREFIX) or name == DELETED:
                continue
            dot = record.dot_of(name)
            if knows(other.knowledge, dot):
                continue  # the other side had seen it: superseding it is no loss
            mine, now = record.values.get(name), merged.values.get(name)
            if mine == now or (record.id, name) in conflicted or record.id in duplicated:
                continue
            if name == "notes" and mine and now:
                # a line merge keeps every line this side added to the text it started from
                base = record.values.get(BASE_PREFIX + name)
                if base is None:
                    base = other.records[record.id].values.get(BASE_PREFIX + name, "")
                added = set(mine.splitlines()) - set(base.splitlines())
                assert added <= set(now.splitlines()), (base, mine, now)
                continue
            if name not in merged.field_dots and merged.dot_of(name) == record.dot_of(name):
                continue
            raise AssertionError(f"{record.id} {name}: {mine!r} lost, now {now!r}")

    @rule(data=st.data())
    def full_round(self, data: st.DataObject) -> None:
        """(6) Merging every pair, in any order, brings everyone together."""
        pairs = list(itertools.combinations(sorted(self.files), 2))
        self.sync_everyone(data.draw(st.permutations(pairs), label="order"))

    def sync_everyone(self, order: list[tuple[str, str]]) -> None:
        """Merge every pair in ``order`` until a whole round changes nothing; all agree then."""
        quiet = False
        for _ in range(len(self.files) + 1):
            quiet = True
            for a, b in order:
                quiet &= self.merge_two(a, b).report.changes_nothing
            if quiet:
                break
        assert quiet, "a round of merges of every pair still changed something"
        names = sorted(self.files)
        first = user_data(self.files[names[0]])
        for name in names[1:]:
            assert user_data(self.files[name]) == first

    def teardown(self) -> None:
        try:
            if self.files:  # the final full sync: however the day went, everyone converges
                self.sync_everyone(list(itertools.combinations(sorted(self.files), 2)))
                self.an_edit_concurrent_with_a_deletion_comes_back()
        finally:
            use_sources(self.previous_sources)

    @invariant()
    def replicas_stay_distinct(self) -> None:
        ids = {r.replica_id for r in self.files.values()}
        assert len(ids) == len(self.files)

    @invariant()
    def an_edit_concurrent_with_a_deletion_comes_back(self) -> None:
        """(7) Under the default policy, a record deleted on one side while someone still
        worked on it on the other is live on both after their merge."""
        for a, b, record_id in self.must_be_back:
            for name in (a, b):
                assert not self.files[name].records[record_id].deleted, (
                    f"{record_id} was edited on one side while deleted on the other, and the "
                    f"merge of {a} and {b} left it deleted on {name}"
                )
        self.must_be_back.clear()


TestOffice = Office.TestCase
TestOffice.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.slow
class TestOfficeLongRun(Office.TestCase):  # type: ignore[misc, valid-type]
    """`tox -e slow`: ten times the office days of the default run."""

    settings = settings(max_examples=1500, stateful_step_count=60, deadline=None)
