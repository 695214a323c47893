"""A store that reads what it can and says what it cannot: damaged records are skipped and named, redone
by the next sweep, and moved aside by ``store check --fix``; the schema's version; no stale failure record."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from harness import records as schema
from harness.cli import main
from harness.store import Store, StoreError
from tests.conftest import REPO

COMMITTED = sorted((REPO / "results" / "runs").glob("*.json"))
GOOD = [p for p in COMMITTED if json.loads(p.read_text())["summary"]["layers"]][:2]


def seeded(root, extra: dict[str, bytes] | None = None):
    """A store holding two committed records, and the ``extra`` files under runs/ as given."""
    runs = root / "runs"
    runs.mkdir(parents=True)
    for path in GOOD:
        shutil.copy(path, runs / path.name)
    for name, data in (extra or {}).items():
        (runs / name).write_bytes(data)
    return Store(root, warn=lambda line: None)


def snapshot(root) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_committed_record_fits_the_schema_as_it_is():
    assert len(COMMITTED) > 100
    for path in COMMITTED:
        record = json.loads(path.read_text())
        assert schema.problem(record) is None, path
        assert schema.migrate(record) is record  # version 1: read as is


def test_a_damaged_record_is_skipped_named_once_and_the_rest_listed(tmp_path, capsys):
    truncated = COMMITTED[5].read_bytes()[:995]
    store = seeded(tmp_path, {COMMITTED[5].name: truncated, "x.json": b"[1, 2]", COMMITTED[6].name: b""})
    lines = []
    store.warn = lines.append
    assert [r["key"] for r in store.records()] == [p.stem for p in GOOD]
    assert len(lines) == 3 and all(line.startswith("warning: skipped ") and "--fix" in line for line in lines)
    try:
        json.loads(truncated)
    except json.JSONDecodeError as exc:
        where = f"(char {exc.pos})"  # where the parser stopped, named in the warning
    assert any(COMMITTED[5].name in line and where in line for line in lines)
    assert any("x.json" in line and "not a run record" in line for line in lines)
    list(store.records())
    assert len(lines) == 3  # once per store
    with pytest.raises(StoreError, match=COMMITTED[5].name):
        store.get(COMMITTED[5].stem)
    assert not store.has(COMMITTED[5].stem) and store.has(GOOD[0].stem)


def test_a_record_from_a_newer_harness_is_not_guessed_at(tmp_path):
    record = json.loads(GOOD[0].read_text())
    assert schema.problem({**record, "schema_version": schema.SCHEMA_VERSION + 1}).startswith("it was written by a newer harness")
    assert schema.problem({k: v for k, v in record.items() if k != "version"}) is None  # no field: version 1
    assert "field 'summary.accuracy'" in schema.problem({**record, "summary": {**record["summary"], "accuracy": "high"}})
    assert schema.problem({**record, "epochs": []}) == "field 'epochs' is an empty list"  # a finished run has an epoch


def test_writing_a_run_moves_its_damaged_record_aside_and_removes_its_failure(tmp_path):
    record = json.loads(GOOD[0].read_text())
    store = seeded(tmp_path)
    store.path(record["key"]).write_text('{"key": ')
    store.put_failure(record["key"], record["spec"], "RuntimeError: boom")
    store.put(record)
    assert store.get(record["key"])["schema_version"] == schema.SCHEMA_VERSION
    assert store.failure(record["key"]) is None
    assert (tmp_path / "quarantine" / "runs" / GOOD[0].name).read_text() == '{"key": '
    assert store.put_failure(record["key"], record["spec"], "late failure") is None  # the finished record stands
    assert not store.failure_path(record["key"]).exists()
    with pytest.raises(StoreError, match="refusing to store"):
        store.put({"key": "k", "summary": {}})


def test_report_goes_on_past_damage_and_run_redoes_it(tmp_path, capsys):
    seeded(tmp_path, {COMMITTED[5].name: b"{", "notes.json": b'{"hello": 1}'})
    assert main(["report", "table2", "--results-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert COMMITTED[5].name in err and "notes.json" in err and "Traceback" not in err


def test_store_check_lists_and_fix_moves_aside_never_deletes(tmp_path, capsys):
    record = json.loads(GOOD[0].read_text())
    store = seeded(tmp_path, {"broken.json": b"{", f"{GOOD[0].stem}.failed.json": json.dumps({"key": GOOD[0].stem, "error": "x"}).encode()})
    store.put_failure("feedfacefeedfaceface", record["spec"], "RuntimeError: out of memory")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / f"{GOOD[1].stem}.npz").write_bytes(b"old")
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "abc.json").write_text(json.dumps({"pid": 2**22 + 7, "host": "elsewhere", "started": 0}))
    os.utime(tmp_path / "claims" / "abc.json", (0, 0))  # a heartbeat from 1970: its sweep is gone
    before = snapshot(tmp_path)
    assert main(["store", "check", "--results-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "damaged  runs/broken.json: is not valid JSON" in out
    assert f"stale    runs/{GOOD[0].stem}.failed.json" in out
    assert "failed   runs/feedfacefeedfaceface.failed.json: RuntimeError: out of memory" in out
    assert f"orphan   checkpoints/{GOOD[1].stem}.npz" in out and "orphan   claims/abc.json" in out
    assert snapshot(tmp_path) == before  # listing changes nothing
    assert main(["store", "check", "--results-dir", str(tmp_path), "--fix"]) == 0
    after = snapshot(tmp_path)
    assert sorted(after.values()) == sorted(before.values())  # every byte is still somewhere
    moved = {p for p in after if p.parts[0] == "quarantine"}
    assert {p.relative_to("quarantine") for p in moved} == {
        p for p in before if p.name in ("broken.json", f"{GOOD[0].stem}.failed.json", f"{GOOD[1].stem}.npz", "abc.json")
    }
    capsys.readouterr()
    assert main(["store", "check", "--results-dir", str(tmp_path)]) == 0
    assert "0 damaged, 0 stale, 0 orphan, 1 failed" in capsys.readouterr().out


def test_report_of_the_committed_store_reads_every_record_and_warns_of_none(tmp_path, capsys):
    copy = tmp_path / "results"
    shutil.copytree(REPO / "results", copy, ignore=shutil.ignore_patterns("figures", "bench", "parity", "tables"))
    found, damaged = Store(copy).scan()
    assert len(found) == len(COMMITTED) and damaged == []
    assert main(["report", "--results-dir", str(copy)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert sorted(p.name for p in (copy / "runs").iterdir()) == sorted(p.name for p in (REPO / "results" / "runs").iterdir())
