"""The ctypes mirror against the layout BCC's compiler gives connscope.h."""

import ctypes
import re

import pytest

from agent.decode import layout as L
from agent.kernel.loader import bpf_dir

from ..agentrun import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root (BCC loads the probe maps)")


@pytest.fixture(scope="module")
def compiled():
    from bcc import BPF

    text = """
#include "connscope.h"
BPF_ARRAY(rec, struct conn_record, 1);
BPF_ARRAY(lkey, struct listener_key, 1);
BPF_ARRAY(lowner, struct listener_owner, 1);
BPF_ARRAY(aggkey, struct agg_key, 1);
BPF_ARRAY(aggcounts, struct agg_counts, 1);
BPF_ARRAY(binkey, struct agg_bin_key, 1);
BPF_ARRAY(ddbin, struct dd_bin, 1);
"""
    b = BPF(text=text.encode(), cflags=[f"-I{bpf_dir()}"])
    yield {name: b[name.encode()].Leaf for name in ("rec", "lkey", "lowner", "aggkey", "aggcounts", "binkey", "ddbin")}
    b.cleanup()


@pytest.mark.parametrize("table,mirror", [("rec", L.ConnRecord), ("lkey", L.ListenerKey), ("lowner", L.ListenerOwner),
                                           ("aggkey", L.AggKey), ("aggcounts", L.AggCounts),
                                           ("binkey", L.AggBinKey), ("ddbin", L.DdBin)])
def test_mirror_matches_compiled_layout(compiled, table, mirror):
    leaf = compiled[table]
    assert ctypes.sizeof(leaf) == ctypes.sizeof(mirror)
    compiled_fields = [(name, getattr(leaf, name).offset, getattr(leaf, name).size) for name, *_ in leaf._fields_]
    mirror_fields = [(name, getattr(mirror, name).offset, getattr(mirror, name).size) for name, *_ in mirror._fields_]
    assert compiled_fields == mirror_fields


def test_constants_match_the_header():
    header = (bpf_dir() / "connscope.h").read_text()
    defines = {m.group(1): int(m.group(2), 0) for m in re.finditer(r"^#define (\w+) (0x[0-9a-fA-F]+|\d+)", header, re.M)}
    assert defines, "no #defines found in connscope.h"
    for name, value in defines.items():
        assert getattr(L, name) == value, f"layout.{name} != connscope.h"
