"""A fuzz over damaged store files (truncated, garbage, keys removed, wrong types, foreign JSON, stray
names): ``report`` and ``store check`` on a store of two committed records and one damaged file never
fail with a traceback, name the damaged file, list the good records, and change nothing under runs/."""

from __future__ import annotations

import json
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from tests.conftest import REPO

COMMITTED = sorted((REPO / "results" / "runs").glob("*.json"))
RECORDS = [p for p in COMMITTED if json.loads(p.read_text())["summary"]["layers"]][:3]
VICTIM = json.loads(RECORDS[2].read_text())
CASES = []

# The fields the readers (report, figures, compare, the results index) use.
PATHS = [
    ("key",), ("status",), ("spec",), ("spec", "backend"), ("spec", "dataset"), ("spec", "seed"), ("spec", "num_samples"),
    ("spec", "dtype"), ("spec", "model"), ("spec", "model", "size"), ("spec", "model", "kind"), ("spec", "model", "schedule"),
    ("spec", "model", "schedule", "name"), ("spec", "model", "schedule", "e_max"), ("spec", "model", "router"),
    ("spec", "model", "router", "kind"), ("spec", "train"), ("spec", "train", "epochs"), ("spec", "train", "lr"), ("epochs",),
    ("epochs", 0), ("epochs", 0, "train_loss"), ("summary",), ("summary", "accuracy"), ("summary", "final_ppl"),
    ("summary", "best_ppl"), ("summary", "params"), ("summary", "layers"), ("summary", "layers", 0),
    ("summary", "layers", 0, "avg_active"), ("summary", "layers", 0, "usage"), ("environment",),
]  # fmt: skip


def _at(record, path):
    for p in path[:-1]:
        record = record[p]
    return record


def _wrong_for(value):
    """Values of another JSON type than ``value``'s (a bool is not a number here; where None is allowed, so is a number)."""
    kinds = {
        "str": st.text(max_size=5),
        "num": st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False)),
        "bool": st.booleans(),
        "list": st.lists(st.integers(), max_size=2),
        "dict": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    }
    own = {str: "str", bool: "bool", int: "num", float: "num", list: "list", dict: "dict", type(None): "num"}[type(value)]
    return st.one_of(*[s for k, s in kinds.items() if k != own])


@st.composite
def damage(draw):
    """``(file name, bytes, what was done)`` of one damaged file."""
    text = RECORDS[2].read_text()
    how = draw(st.sampled_from(["truncate", "garbage", "drop", "retype", "foreign", "stray"]))
    name = RECORDS[2].name
    if how == "truncate":
        data = text.encode()[: draw(st.integers(0, len(text.rstrip()) - 1))]
    elif how == "garbage":
        data = draw(st.binary(max_size=200))
    elif how in ("drop", "retype"):
        record = json.loads(text)
        path = draw(st.sampled_from(PATHS if how == "retype" else [p for p in PATHS if isinstance(p[-1], str)]))
        parent = _at(record, path)
        if how == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_wrong_for(parent[path[-1]]))
        data = json.dumps(record).encode()
    elif how == "foreign":
        leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
        nest = lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3)  # noqa: E731
        value = draw(st.recursive(leaf, nest, max_leaves=8))
        data = json.dumps(value).encode()
    else:  # a real record under a name that is not its key
        name = draw(st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)) + ".json"
        data = text.encode()
    return name, data, how


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # capsys read per case
@given(case=damage(), command=st.sampled_from(["report", "check"]))
def test_fuzz_damaged_store(case, command, tmp_path_factory, capsys):
    name, data, how = case
    CASES.append((how, command))
    root = tmp_path_factory.mktemp("store")
    runs = root / "runs"
    runs.mkdir()
    for path in RECORDS[:2]:
        shutil.copy(path, runs / path.name)
    (runs / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in runs.iterdir()}
    argv = ["report", "table2", "--results-dir", str(root)] if command == "report" else ["store", "check", "--results-dir", str(root)]
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    said = err if command == "report" else out
    assert name in said, (how, said)
    assert not any(p.name in said for p in RECORDS[:2] if p.name != name)  # the good records are not blamed
    assert code == (0 if command == "report" else 1)
    assert {p.name: p.read_bytes() for p in runs.iterdir()} == before
    if command == "report":
        assert (root / "tables" / "table2.md").exists() or "no runs" in out


def test_the_fuzz_ran(capsys):
    with capsys.disabled():
        kinds = sorted({how for how, _ in CASES})
        print(f"\nstore fuzz: {len(CASES)} damaged stores ({', '.join(kinds)})")
    assert len(CASES) >= 60 or not CASES
