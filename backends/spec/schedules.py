"""Per-layer expert counts E_l (Definition 2, Eq. 8-12).

The paper's closed forms were lost; the reconstruction below reproduces the only schedule the paper
prints (Table 6: descending, L = 4, E_max = 8, E_min = 1 -> 8, 6, 3, 1) and each schedule's description.
With ``p_l = l / (L - 1)`` for ``l = 0..L-1`` (``p = 0`` when L = 1), ``D = E_max - E_min``:

- uniform:       ``E_max`` in every layer (Table 2's "uniform MoE"; Section 7.3's "4 vs. 8" compares
                 descending's average 4.5 with uniform's 8).
- descending:    ``E_max - D p``                      (Eq. 8, capacity in early layers)
- ascending:     ``E_min + D p``                      (Eq. 9, capacity in deep layers)
- pyramid-up:    ``E_min + D (1 - |2p - 1|)``         (Eq. 10, triangle peaking mid-depth)
- pyramid-down:  ``E_max - D (1 - |2p - 1|)``         (Eq. 11, valley, capacity at both ends)
- wave-down:     ``c + a cos(3 pi p)``                (Eq. 12; c = (E_max + E_min)/2, a = D/2: the two
                 constants after "where". The frequency, 1.5 periods over depth, is our choice: it makes
                 L = 4 alternate E_max, E_min, E_max, E_min and is not a copy of any other schedule.)
- wave-up:       ``c - a cos(3 pi p)``                ("the inverse pattern" of Eq. 12)

Rounding is half-up, ``floor(x + 1/2)`` (not Python's banker's ``round``), computed in exact rational
arithmetic where the formula is rational, then clamped to [E_min, E_max].
"""

from __future__ import annotations

import math
from fractions import Fraction

from .validate import check_int

SCHEDULES = ("uniform", "descending", "ascending", "pyramid-up", "pyramid-down", "wave-up", "wave-down")


def _position(layer: int, num_layers: int) -> Fraction:
    return Fraction(0) if num_layers == 1 else Fraction(layer, num_layers - 1)


def _round_half_up(x: Fraction | float) -> int:
    if isinstance(x, float):
        # cos() is inexact: snap values within 1e-9 of an integer + 1/2 to the half before rounding.
        x = Fraction(round(x * 2e9), int(2e9))
    return math.floor(x + Fraction(1, 2))


def _raw(schedule: str, p: Fraction, e_min: int, e_max: int) -> Fraction | float:
    span = e_max - e_min
    tent = 1 - abs(2 * p - 1)
    if schedule == "uniform":
        return Fraction(e_max)
    if schedule == "descending":
        return e_max - span * p
    if schedule == "ascending":
        return e_min + span * p
    if schedule == "pyramid-up":
        return e_min + span * tent
    if schedule == "pyramid-down":
        return e_max - span * tent
    wave = (e_max + e_min) / 2 + span / 2 * math.cos(3 * math.pi * float(p))
    return wave if schedule == "wave-down" else (e_max + e_min) - wave


def check_bounds(e_min: int, e_max: int) -> None:
    """Raise ``ValueError`` unless ``1 <= e_min <= e_max`` (``ScheduleConfig``'s own check)."""
    check_int("ScheduleConfig", "e_min", e_min, 1)
    check_int("ScheduleConfig", "e_max", e_max, 1)
    if e_min > e_max:
        raise ValueError(
            f"ScheduleConfig: e_min = {e_min} > e_max = {e_max}; E_min must not exceed E_max "
            "(swap them, or use the 'ascending' schedule to put the large count last)"
        )


def expert_counts(schedule: str, num_layers: int, e_min: int, e_max: int) -> list[int]:
    """Experts per layer ``[E_0, ..., E_{L-1}]`` of ``schedule`` (Eq. 8-12, see the module docstring).

    Raises ``ValueError`` for an unknown schedule, ``num_layers < 1``, ``e_min < 1`` or ``e_min > e_max``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers = {num_layers!r} is invalid: must be an integer >= 1")
    check_bounds(e_min, e_max)
    return [
        min(e_max, max(e_min, _round_half_up(_raw(schedule, _position(layer, num_layers), e_min, e_max)))) for layer in range(num_layers)
    ]
