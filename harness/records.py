"""The run record's schema: what a finished ``<root>/runs/<key>.json`` must hold for the readers
(report, figures, compare, the results index) to use it, and how an older format is brought up to date.

A record carries ``schema_version``. Records written before the field existed are version 1, today's
format (they carry ``version: 1``, or nothing), and read as they are. A future format bumps
:data:`SCHEMA_VERSION` and adds to :data:`MIGRATIONS` a function turning a version-N record into a
version-N+1 one, so old stores are migrated on reading instead of breaking. A record from a newer harness
than this one is reported as unreadable here, with the fix (update the harness), never guessed at.

:func:`problem` returns ``None`` for a usable record, else one line naming the first field that is
missing or of the wrong type.
"""

from __future__ import annotations

from collections.abc import Callable

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}  # version N -> a function returning the record at N + 1


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(v) -> bool:
    return isinstance(v, str)


def _optional(check):
    return lambda v: v is None or check(v)


def _dict(**fields):
    return fields


def _list_of(item):
    return [item]


class _NonEmpty(list):
    pass


def _nonempty_list_of(item):
    return _NonEmpty([item])


_NUMBERS = "a number"
_LAYER = _dict(experts=_int, avg_active=_number, usage=_list_of(_number))
_EPOCH = _dict(epoch=_int, train_loss=_number, test_loss=_number, test_accuracy=_number, perplexity=_number, seconds=_number)
_SPEC = _dict(
    backend=_str,
    dataset=_str,
    num_samples=_optional(_int),
    seed=_int,
    dtype=_str,
    model=_dict(
        size=_str,
        kind=_str,
        task=_str,
        schedule=_dict(name=_str, e_min=_int, e_max=_int),
        router=_dict(kind=_str),
    ),
    train=_dict(lr=_number, batch_size=_int, epochs=_int),
)
_SUMMARY = _dict(
    accuracy=_number,
    best_accuracy=_number,
    final_ppl=_number,
    best_ppl=_number,
    train_loss=_number,
    test_loss=_number,
    epochs_to_95=_optional(_int),
    train_seconds=_number,
    params=_int,
    efficiency=_number,
    active_mflops=_number,
    layers=_list_of(_LAYER),
)
RECORD = _dict(key=_str, status=lambda v: v == "done", spec=_SPEC, epochs=_nonempty_list_of(_EPOCH), summary=_SUMMARY, environment=_dict())
FAILURE = _dict(key=_str, error=_str)

_EXPECTED = {_number: _NUMBERS, _int: "a whole number", _str: "a string"}


def _describe(check) -> str:
    if isinstance(check, dict):
        return "an object"
    if isinstance(check, list):
        return "a list"
    return _EXPECTED.get(check, "a valid value")


def _check(value, schema, where: str) -> str | None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return f"{where or 'the file'} is {type(value).__name__}, not an object"
        for name, sub in schema.items():
            field = f"{where}.{name}" if where else name
            if name not in value:
                return f"field {field!r} is missing"
            found = _check(value[name], sub, field)
            if found:
                return found
        return None
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"field {where!r} is {type(value).__name__}, not a list"
        if isinstance(schema, _NonEmpty) and not value:
            return f"field {where!r} is an empty list"
        for i, item in enumerate(value):
            found = _check(item, schema[0], f"{where}[{i}]")
            if found:
                return found
        return None
    return None if schema(value) else f"field {where!r} is {value!r:.40}, not {_describe(schema)}"


def version(record: dict) -> int | None:
    """The record's schema version (1 where it predates the field), or ``None`` if it is not a whole number."""
    v = record.get("schema_version", record.get("version", 1))
    return v if _int(v) else None


def migrate(record: dict) -> dict:
    """``record`` brought to :data:`SCHEMA_VERSION` (the same object when it is already there)."""
    v = version(record)
    while v is not None and v < SCHEMA_VERSION:
        record = MIGRATIONS[v](record)
        v = version(record)
    return record


def problem(record, schema: dict = RECORD) -> str | None:
    """``None`` if ``record`` (already migrated) fits ``schema``, else what is wrong, in one line."""
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not a run record"
    v = version(record)
    if v is None:
        return f"field 'schema_version' is {record.get('schema_version', record.get('version'))!r}, not a whole number"
    if v > SCHEMA_VERSION:
        return f"it was written by a newer harness (schema_version {v}; this one reads up to {SCHEMA_VERSION}): update the harness"
    if v < 1:
        return f"field 'schema_version' is {v}, not 1 or more"
    return _check(record, schema, "")
