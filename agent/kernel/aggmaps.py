"""The kernel's aggregation maps and knobs, as user space drives them.

bpf/aggregate.c counts into one of two generations of per-CPU maps, the
one knobs[KNOB_GEN] names. take() flips the knob and empties the other
generation with BPF_MAP_LOOKUP_AND_DELETE_BATCH, a bounded chunk at a time
(BCC's own batch helper allocates room for every possible entry of every
CPU at once: 100+ MB on a large host). What it returns is raw: keys and
per-CPU values, summed here; decode/aggregates.py gives them meaning.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time

from ..decode import layout

CHUNK = 256  # entries per batch call
GRACE_S = 0.01  # between the flip and the take: see take()


class Knobs:
    """knobs[] in bpf/maps.c (KNOB_* in connscope.h): what user space tells the programs."""

    def __init__(self, table):
        self._t = table

    def set(self, idx: int, value: int) -> None:
        self._t[ctypes.c_int(idx)] = ctypes.c_uint64(int(value))

    def get(self, idx: int) -> int:
        return int(self._t[ctypes.c_int(idx)].value)


def take_percpu(fd: int, key_type, value_type, ncpu: int):
    """Looks up and deletes every entry of a per-CPU hash map; yields
    (key, [value per CPU])."""
    from bcc.libbcc import lib

    vsize = (ctypes.sizeof(value_type) + 7) // 8 * 8
    assert vsize == ctypes.sizeof(value_type), "per-CPU values are padded to 8 bytes"
    keys = (key_type * CHUNK)()
    values = (value_type * (CHUNK * ncpu))()
    token = ctypes.c_uint32(0)
    first = True
    while True:
        count = ctypes.c_uint32(CHUNK)
        rc = lib.bpf_lookup_and_delete_batch(fd, None if first else ctypes.byref(token), ctypes.byref(token),
                                             ctypes.byref(keys), ctypes.byref(values), ctypes.byref(count))
        err = ctypes.get_errno() if rc else 0
        if rc and err not in (errno.ENOENT,):
            raise OSError(err, f"BPF_MAP_LOOKUP_AND_DELETE_BATCH: {os.strerror(err)}")
        for i in range(count.value):  # copies: the next call reuses the buffers
            per_cpu = values[i * ncpu:(i + 1) * ncpu]  # ints for a scalar value type
            if issubclass(value_type, ctypes.Structure):
                per_cpu = [value_type.from_buffer_copy(v) for v in per_cpu]
            yield key_type.from_buffer_copy(keys[i]), per_cpu
        if rc:  # ENOENT: the map is done
            return
        first = False


class AggMaps:
    """Both generations of bpf/aggregate.c's maps, and the bin table."""

    def __init__(self, bpf, knobs: Knobs, bin_table):
        self.bpf = bpf
        self.knobs = knobs
        from bcc.utils import get_possible_cpus  # imported late, as loader.py imports bcc

        self.ncpu = len(get_possible_cpus())  # the per-CPU slots of each value
        self.gen = 0
        bins = bpf["dd_bins"]
        for slot, (last, key) in enumerate(bin_table):
            if last:
                bins[ctypes.c_int(slot)] = layout.DdBin(last=last, key=key)

    def take(self) -> tuple[list, list]:
        """Flips the generation and returns what the old one counted:
        ([(AggKey, [AggCounts per CPU])], [(AggBinKey, n)])."""
        old, self.gen = self.gen, self.gen ^ 1
        self.knobs.set(layout.KNOB_GEN, self.gen)
        # A program that read the knob just before the flip still adds to
        # the old generation's row through the pointer it looked up; taking
        # (deleting) that row meanwhile loses the add. Programs run for
        # microseconds: a grace period before the take lets them finish.
        time.sleep(GRACE_S)
        rows = list(take_percpu(self.bpf[f"agg_rows{old}"].map_fd, layout.AggKey, layout.AggCounts, self.ncpu))
        bins = [(k, sum(vals))
                for k, vals in take_percpu(self.bpf[f"agg_bins{old}"].map_fd, layout.AggBinKey, ctypes.c_uint64,
                                           self.ncpu)]
        return rows, bins
