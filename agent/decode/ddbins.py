"""The table that lets the kernel bin values exactly as DDSketch would.

BPF has no floating point, so bpf/aggregate.c cannot compute DDSketch's
key, ceil(log_gamma(v)). It computes a slot from the value's leading bit
and the DD_SUB_BITS bits after it instead; this table, made here with the
sketch library's own mapping and written into the `dd_bins` map at load,
says for each slot which key its values have. A slot is narrower than a
bin (1/64 of an octave against gamma - 1 = 2%), so it holds at most one
bin boundary: values up to `last` have `key`, those above have key + 1.
The kernel's keys therefore equal LogarithmicMapping.key(ns / 1000) for
every integer ns, which tests/pure/test_ddbins.py checks.
"""

from __future__ import annotations

import math
from functools import lru_cache

from .layout import DD_SLOTS, DD_SUB_BITS

NS_PER_UNIT = 1000  # the sketches hold microseconds; the kernel measures ns
RELATIVE_ACCURACY = 0.01  # quantiles within 1% of the true value (aggregate/sketch.py)


def slot_of(v: int) -> int:
    """The slot bpf/aggregate.c's dd_key() computes for v ns (v > 0)."""
    b = v.bit_length() - 1
    m = v >> (b - DD_SUB_BITS) if b >= DD_SUB_BITS else v << (DD_SUB_BITS - b)
    return (b << DD_SUB_BITS) | (m & ((1 << DD_SUB_BITS) - 1))


def _slot_range(slot: int) -> tuple[int, int] | None:
    """The integers (first, last) whose slot this is, or None when no integer has it."""
    b, m = slot >> DD_SUB_BITS, slot & ((1 << DD_SUB_BITS) - 1)
    top = (1 << DD_SUB_BITS) | m
    if b >= DD_SUB_BITS:
        first = top << (b - DD_SUB_BITS)
        return first, first + (1 << (b - DD_SUB_BITS)) - 1
    shift = DD_SUB_BITS - b
    if top & ((1 << shift) - 1):
        return None
    v = top >> shift
    return v, v


@lru_cache(maxsize=4)
def table(relative_accuracy: float) -> tuple[tuple[int, int], ...]:
    """(last, key) per slot, DD_SLOTS of them; unused slots are (0, 0)."""
    from ddsketch.mapping import LogarithmicMapping

    key = LogarithmicMapping(relative_accuracy).key

    def k(v: int) -> int:
        return key(v / NS_PER_UNIT)

    out = []
    for slot in range(DD_SLOTS):
        rng = _slot_range(slot)
        if rng is None:
            out.append((0, 0))
            continue
        lo, hi = rng
        k0 = k(lo)
        if k(hi) - k0 > 1:
            raise AssertionError(f"slot {slot} spans more than two DDSketch bins")
        # the last integer still in bin k0 (binary search: keys do not decrease)
        a, z = lo, hi
        while a < z:
            mid = (a + z + 1) // 2
            if k(mid) == k0:
                a = mid
            else:
                z = mid - 1
        out.append((a, k0))
    return tuple(out)


def key_of(v: int, relative_accuracy: float) -> int:
    """What the kernel computes for v ns, for tests."""
    last, key = table(relative_accuracy)[slot_of(max(v, 1))]
    return key + (v > last)


assert DD_SLOTS == 64 << DD_SUB_BITS and math.log1p(1 / (1 << DD_SUB_BITS)) < math.log(1.01 / 0.99)
