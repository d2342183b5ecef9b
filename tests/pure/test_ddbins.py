"""The kernel's DDSketch bin table against the sketch library's own mapping."""

import random

import pytest
from ddsketch.mapping import LogarithmicMapping

from agent.decode import ddbins
from agent.decode.layout import DD_SLOTS


@pytest.fixture(scope="module")
def mapping():
    return LogarithmicMapping(ddbins.RELATIVE_ACCURACY)


def test_the_table_has_one_slot_per_octave_step():
    assert len(ddbins.table(ddbins.RELATIVE_ACCURACY)) == DD_SLOTS


def test_every_slot_boundary_bins_as_the_library_does(mapping):
    """At each slot's last value and the value after it (where a bin boundary
    can sit), and at the slot's first value, the table gives the library's key."""
    for last, _key in ddbins.table(ddbins.RELATIVE_ACCURACY):
        if not last:
            continue
        for v in (last - 1, last, last + 1):
            if 0 < v < 1 << 64:
                assert ddbins.key_of(v, ddbins.RELATIVE_ACCURACY) == mapping.key(v / ddbins.NS_PER_UNIT), v


def test_small_and_random_values_bin_as_the_library_does(mapping):
    rng = random.Random(7)
    values = list(range(1, 70_000)) + [rng.randrange(1, 1 << 63) for _ in range(100_000)]
    wrong = [v for v in values if ddbins.key_of(v, ddbins.RELATIVE_ACCURACY) != mapping.key(v / ddbins.NS_PER_UNIT)]
    assert wrong == []


def test_slots_match_the_kernels_formula():
    """slot_of is what bpf/aggregate.c computes: leading bit, then six bits."""
    assert ddbins.slot_of(1) == 0
    assert ddbins.slot_of(64) == 6 << 6
    assert ddbins.slot_of(65) == (6 << 6) | 1
    assert ddbins.slot_of((1 << 63) + (1 << 62)) == (63 << 6) | 32
