"""Every argument checked before any work: one line on stderr naming the flag and what it takes, exit 2,
no traceback, nothing created; a fuzz over the flags of ``run`` and ``train``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main

CASES = []  # every argv the fuzz tried, counted in the last test


def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_clear_line(err: str, *names: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert all(name in lines[0] for name in names), (names, err)


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["run", "table2", "--epochs", "0"], ["--epochs", "1 or more"]),
        (["run", "table2", "--num-samples", "0"], ["--num-samples", "1 or more"]),
        (["run", "table2", "--num-samples", "-5"], ["--num-samples", "1 or more"]),
        (["run", "table2", "--jobs", "0"], ["--jobs", "1 or more"]),
        (["run", "table2", "--epochs=--"], ["--epochs", "expected one value"]),  # argparse alone would pass on []
        (["run", "table2", "--seeds", "-1"], ["--seeds", "0 or more"]),
        (["run", "table2", "--only", "schedule=Sideways"], ["--only schedule=Sideways", "Descending", "Uniform"]),
        (["run", "table2", "--only", "colour=red"], ["--only colour=red", "schedule"]),
        (["train", "--router", "topk", "--top-k", "20"], ["--top-k 20", "between 1 and 8"]),
        (["train", "--k-min", "20"], ["--k-min 20", "between 1 and 8"]),
        (["train", "--k-max", "9"], ["--k-max 9", "between 1 and 8"]),
        (["train", "--epochs", "0"], ["--epochs", "1 or more"]),
        (["train", "--batch-size", "0"], ["--batch-size"]),
    ],
)
def test_a_bad_argument_is_one_line_naming_it(argv, names, tmp_path, capsys):
    store = tmp_path / "store"
    extra = ["--results-dir", str(store)] if argv[0] == "run" else ["--json-out", str(store / "out.json")]
    code, _, err = _cli([*argv, *extra], capsys)
    assert code == 2
    _one_clear_line(err, *names)
    assert not store.exists()  # refused before anything was made


def test_output_paths_are_probed_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for argv, flag in [
        (["run", "table2", "--dataset", "synthetic", "--results-dir", str(blocker / "store")], "--results-dir"),
        (["train", "--json-out", str(blocker / "out.json")], "--json-out"),
        (["compare", str(tmp_path), str(tmp_path), "--out", str(blocker / "c.md")], "--out"),
        (["report", "--results-dir", str(tmp_path / "typo")], "--results-dir"),
        (["figures", "--results-dir", str(tmp_path / "typo")], "--results-dir"),
        (["store", "check", "--results-dir", str(tmp_path / "typo")], "--results-dir"),
    ]:
        code, out, err = _cli(argv, capsys)
        assert code == 2 and out == "", argv
        _one_clear_line(err, flag)
        assert "is a file, not a folder" in err or "no such folder" in err
    assert not (tmp_path / "typo").exists()  # report does not create a mistyped store


_BAD_INT = st.one_of(st.integers(max_value=0).map(str), st.sampled_from(["", "x", "1.5", "two", "1e3", "--"]))
_RUN_FLAGS = st.sampled_from(["--epochs", "--num-samples", "--jobs"])
_GOOD_RUN = st.lists(
    st.sampled_from([["--seeds", "0"], ["--quick"], ["--rerun"], ["--backend", "torch"], ["--epochs", "1"], ["--jobs", "2"]]),
    max_size=3,
)


@st.composite
def bad_run(draw):
    """``run`` argv with one bad value among valid flags, and the text its error must name."""
    pairs = draw(_GOOD_RUN)
    kind = draw(st.sampled_from(["int", "seed", "only-value", "only-label"]))
    if kind == "int":
        flag, value = draw(_RUN_FLAGS), draw(_BAD_INT)
        bad, name = [f"{flag}={value}"], flag
    elif kind == "seed":
        bad, name = ["--seeds", str(draw(st.integers(max_value=-1)))], "--seeds"
    elif kind == "only-value":
        value = draw(st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=8))
        bad, name = ["--only", f"schedule=zz{value}"], "--only"
    else:
        label = draw(st.text(st.characters(whitelist_categories=("Ll",)), min_size=1, max_size=6).filter(lambda s: s != "schedule"))
        bad, name = ["--only", f"{label}=x"], "--only"
    where = draw(st.integers(0, len(pairs)))
    flat = [x for pair in [*pairs[:where], bad, *pairs[where:]] for x in pair]
    return ["run", "table2", "--dataset", "synthetic", *flat], name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # capsys is read out per case
@given(case=bad_run())
def test_fuzz_run_arguments(case, tmp_path_factory, capsys):
    argv, name = case
    CASES.append(argv)
    store = tmp_path_factory.mktemp("fuzz") / "store"
    code, out, err = _cli([*argv, "--results-dir", str(store)], capsys)
    assert code == 2 and out == ""
    _one_clear_line(err, name)
    assert not store.exists()


@st.composite
def bad_train(draw):
    kind = draw(st.sampled_from(["top-k", "k-min", "k-max", "int"]))
    e_max = draw(st.integers(1, 16))
    base = ["train", "--e-min", "1", "--e-max", str(e_max)]
    if kind == "top-k":
        return [*base, "--router", "topk", "--top-k", str(draw(st.integers(e_max + 1, 10_000)))], "--top-k"
    if kind in ("k-min", "k-max"):
        return [*base, f"--{kind}", str(draw(st.integers(e_max + 1, 10_000)))], f"--{kind}"
    flag = draw(st.sampled_from(["--epochs", "--num-samples", "--batch-size"]))
    return [*base, flag, draw(_BAD_INT)], flag


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # capsys is read out per case
@given(case=bad_train())
def test_fuzz_train_arguments(case, tmp_path_factory, capsys):
    argv, name = case
    CASES.append(argv)
    out_dir = tmp_path_factory.mktemp("fuzz")
    code, out, err = _cli([*argv, "--json-out", str(out_dir / "o.json")], capsys)
    assert code == 2 and out == ""
    _one_clear_line(err, name)
    assert list(out_dir.iterdir()) == []


def test_the_fuzz_ran(capsys):
    with capsys.disabled():
        print(f"\ncli fuzz: {len(CASES)} generated argument lists")
    assert len(CASES) >= 60 or not CASES
