"""Import profiles: how another CRM's export maps onto salesmgr's fields.

A profile names the CRM's columns and what each becomes (``"Account Name" -> company``), maps
the CRM's stage names onto ours, says how probabilities are written (``60`` or ``0.6``), and which
column holds the CRM's own record id (kept as ``external_id``, prefixed with the profile's name so
ids of two CRMs never clash, and used by ``import --update`` to find the record again).

Built-in profiles (Salesforce, HubSpot, Pipedrive, Zoho) are registered by a plugin through
``salesmgr_register_import_profiles``, as a third party would register its own; any other
source is described by a mapping file (TOML, `load_mapping_file`).  A profile is picked with
``--profile NAME`` or found from the header: a profile fits when every one of its ``signature``
columns is there; if two fit, the user must choose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from salesmgr.errors import SalesmgrError, ValidationError

EXTERNAL_ID = "external_id"
# The column of salesmgr's own export that says whether a row is an opportunity or an activity.
RECORD_COLUMN = "record"
ProbabilityForm = Literal["percent", "fraction"]


def column_key(header: str) -> str:
    """How headers are compared: ``Close Date``, ``close-date`` and ``close_date`` are one."""
    return "_".join(header.strip().casefold().replace("-", " ").replace("_", " ").split())


@dataclass(frozen=True)
class ImportProfile:
    """What one source's CSV means (see the module's docstring)."""

    name: str
    title: str
    columns: Mapping[str, str]  # the source's header -> our field name
    stages: Mapping[str, str] = field(default_factory=dict)  # the source's stage -> ours
    probability: ProbabilityForm = "percent"
    # A column saying won/lost/open apart from the stage (Pipedrive's "Status").
    status_column: str | None = None
    statuses: Mapping[str, str] = field(default_factory=dict)
    signature: frozenset[str] = frozenset()  # columns that identify this source's export
    locale: str | None = None  # the locale its numbers and dates are written in, if fixed

    def field_for(self, header: str) -> str | None:
        return self.column_keys().get(column_key(header))

    def column_keys(self) -> dict[str, str]:
        return {column_key(k): v for k, v in self.columns.items()}

    def stage_for(self, stage: str) -> str | None:
        folded = {k.strip().casefold(): v for k, v in self.stages.items()}
        return folded.get(stage.strip().casefold())

    def fits(self, header: Iterable[str]) -> bool:
        present = {column_key(h) for h in header}
        return bool(self.signature) and {column_key(s) for s in self.signature} <= present


def choose_profile(
    header: list[str], profiles: Mapping[str, ImportProfile], wanted: str | None
) -> ImportProfile | None:
    """The profile named ``wanted``, else the one whose signature the header has (None when
    none has: the CSV is salesmgr's own columns).  Two fitting profiles must be chosen by name."""
    if wanted is not None:
        try:
            return profiles[wanted.casefold()]
        except KeyError:
            known = ", ".join(sorted(profiles)) or "none"
            raise ValidationError(f"no import profile {wanted!r} (known: {known})") from None
    fitting = [p for p in profiles.values() if p.fits(header)]
    if len(fitting) > 1:
        names = " and ".join(sorted(p.name for p in fitting))
        raise ValidationError(f"the header fits the profiles {names}; choose one with --profile")
    return fitting[0] if fitting else None


def load_mapping_file(path: Path, fields: Iterable[str], stages: Iterable[str]) -> ImportProfile:
    """A profile from a TOML mapping file::

        name = "legacy"              # optional (default: the file's name); prefixes external ids
        locale = "de_DE"             # optional: how its numbers and dates are written
        probability = "fraction"     # optional: "percent" (60, the default) or "fraction" (0.6)
        [columns]                    # the CSV's header -> salesmgr field (or external_id)
        "Firma" = "company"
        "Nr." = "external_id"
        [stages]                     # optional: the CSV's stages -> salesmgr's
        "Angebot" = "Proposal"

    Every name is checked against ``fields`` and ``stages`` so a typo is one clear error."""
    import tomllib  # imported by the commands that read a mapping file, not by every command

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SalesmgrError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as problem:
        raise SalesmgrError(f"{path}: cannot read ({problem})") from None
    except tomllib.TOMLDecodeError as problem:
        raise ValidationError(f"{path}: not a TOML mapping file ({problem})") from None
    known_keys = {"name", "locale", "probability", "columns", "stages"}
    unknown = sorted(set(data) - known_keys)
    if unknown:
        raise ValidationError(f"{path}: unknown key {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(sorted(known_keys))})")
    columns = data.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise ValidationError(f"{path}: needs a [columns] table of \"CSV header\" = \"field\"")
    field_names = {*fields, EXTERNAL_ID}
    for header, target in columns.items():
        if target not in field_names:
            raise ValidationError(f"{path}: column {header!r} maps to {target!r}, which is not a "
                                  f"field (known: {', '.join(sorted(field_names))})")
    stage_map = data.get("stages", {})
    our_stages = {s.casefold(): s for s in stages}
    if not isinstance(stage_map, dict):
        raise ValidationError(f"{path}: [stages] must be a table of \"their stage\" = \"ours\"")
    for theirs, ours in stage_map.items():
        if not isinstance(ours, str) or ours.casefold() not in our_stages:
            raise ValidationError(f"{path}: stage {theirs!r} maps to {ours!r}, which is not a "
                                  f"stage (known: {', '.join(our_stages.values())})")
    probability = data.get("probability", "percent")
    if probability not in ("percent", "fraction"):
        raise ValidationError(f"{path}: probability must be \"percent\" or \"fraction\"")
    locale = data.get("locale")
    if locale is not None:
        from salesmgr.model.localized import canonical_locale

        try:
            locale = canonical_locale(str(locale))
        except ValueError as problem:
            raise ValidationError(f"{path}: locale {problem}") from None
    return ImportProfile(
        name=str(data.get("name") or path.stem),
        title=f"mapping file {path.name}",
        columns={str(k): str(v) for k, v in columns.items()},
        stages={str(k): our_stages[str(v).casefold()] for k, v in stage_map.items()},
        probability=probability,
        locale=locale,
    )
