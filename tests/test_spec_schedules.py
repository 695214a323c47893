"""Expert schedules (Eq. 8-12): the paper's printed values and structural properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.spec import SCHEDULES, expert_counts

bounds = st.integers(1, 32).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, 40)))
layers = st.integers(1, 16)


def test_table6_descending_small():
    # The only schedule the paper prints: Table 6, descending, L = 4, E_max = 8, E_min = 1.
    assert expert_counts("descending", 4, 1, 8) == [8, 6, 3, 1]


@pytest.mark.parametrize(
    ("e_max", "e_min", "expected"),
    [(2, 1, [2, 2, 1, 1]), (4, 1, [4, 3, 2, 1]), (8, 1, [8, 6, 3, 1]), (16, 1, [16, 11, 6, 1]), (8, 2, [8, 6, 4, 2]), (8, 4, [8, 7, 5, 4])],
)
def test_table3_configurations(e_max, e_min, expected):
    assert expert_counts("descending", 4, e_min, e_max) == expected


@pytest.mark.parametrize(
    ("num_layers", "schedule", "expected"),
    [
        (2, "pyramid-up", [1, 1]),
        (6, "descending", [8, 7, 5, 4, 2, 1]),
        (6, "pyramid-up", [1, 4, 7, 7, 4, 1]),
        (8, "pyramid-down", [8, 6, 4, 2, 2, 4, 6, 8]),
        (4, "wave-down", [8, 1, 8, 1]),
        (4, "wave-up", [1, 8, 1, 8]),
        (4, "uniform", [8, 8, 8, 8]),
    ],
)
def test_reconstructed_values(num_layers, schedule, expected):
    # Values tabulated in ../shared/spec/PAPERS.md section 2.6 (and the spec's wave choice).
    assert expert_counts(schedule, num_layers, 1, 8) == expected


@given(st.sampled_from(SCHEDULES), layers, bounds)
def test_bounds_and_length(schedule, num_layers, lohi):
    lo, hi = lohi
    counts = expert_counts(schedule, num_layers, lo, hi)
    assert len(counts) == num_layers
    assert all(isinstance(c, int) and lo <= c <= hi for c in counts)


@given(layers, bounds)
def test_reversal_symmetry_and_sums(num_layers, lohi):
    lo, hi = lohi
    desc, asc = expert_counts("descending", num_layers, lo, hi), expert_counts("ascending", num_layers, lo, hi)
    if num_layers == 1:  # p = 0 for a single layer: each schedule's first value
        assert (desc, asc) == ([hi], [lo])
        return
    assert asc == desc[::-1]
    assert sum(asc) == sum(desc)
    assert desc == sorted(desc, reverse=True)
    assert sum(expert_counts("uniform", num_layers, lo, hi)) == num_layers * hi
    if num_layers >= 2:
        assert (desc[0], desc[-1]) == (hi, lo)


@given(layers, bounds)
def test_pyramid_symmetry(num_layers, lohi):
    lo, hi = lohi
    up, down = expert_counts("pyramid-up", num_layers, lo, hi), expert_counts("pyramid-down", num_layers, lo, hi)
    assert up == up[::-1] and down == down[::-1]
    assert max(up) == up[(num_layers - 1) // 2]  # peaks mid-depth
    assert min(down) == down[(num_layers - 1) // 2]  # valley mid-depth
    # up and down are reflections about the midpoint; half-up rounding can break a .5 tie by one.
    assert all(abs(u + d - (lo + hi)) <= 1 for u, d in zip(up, down))


@given(layers, bounds)
def test_wave_up_inverts_wave_down(num_layers, lohi):
    lo, hi = lohi
    up, down = expert_counts("wave-up", num_layers, lo, hi), expert_counts("wave-down", num_layers, lo, hi)
    assert all(abs(u + d - (lo + hi)) <= 1 for u, d in zip(up, down))
    assert down[0] == hi and up[0] == lo


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("zigzag", 4, 1, 8), "unknown schedule 'zigzag'"),
        (("descending", 4, 8, 1), "e_min = 8 > e_max = 1"),
        (("descending", 0, 1, 8), "num_layers = 0"),
        (("descending", 4, 0, 8), "e_min = 0"),
    ],
)
def test_bad_arguments_name_the_problem(args, message):
    with pytest.raises(ValueError, match=message):
        expert_counts(*args)
