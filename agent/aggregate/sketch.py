"""Mergeable distributions: DDSketch, serialized in its protobuf JSON form.

The form is the one DataDog's sketches (Go, Java, Python) share
(ddsketch.proto), with contiguous bins: the Python library's from_proto
reads only that form (a sparse `binCounts` map decodes to an empty sketch
there). A pipeline merges summaries of many hosts and windows exactly by
decoding with any DDSketch library and merging: bins add, so the merged
quantiles equal those of one sketch over all the values.
"""

from __future__ import annotations

from ddsketch import DDSketch
from ddsketch.pb.ddsketch_pb2 import DDSketch as DDSketchMessage
from ddsketch.pb.proto import DDSketchProto
from google.protobuf.json_format import MessageToDict, ParseDict

from ..decode.ddbins import RELATIVE_ACCURACY  # the kernel bins with the same mapping


def new() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


def from_bins(bins: dict[int, int]) -> DDSketch:
    """A sketch from DDSketch keys -> counts, as the kernel bins them
    (agent/decode/ddbins.py): the same bins add() would have filled."""
    sk = new()
    for key, n in bins.items():
        if n:
            sk._store.add(key, n)
            sk._count += n
    return sk


def to_json(sketch: DDSketch) -> dict:
    return MessageToDict(DDSketchProto.to_proto(sketch))


def from_json(data: dict) -> DDSketch:
    return DDSketchProto.from_proto(ParseDict(data, DDSketchMessage()))


def percentiles(sketch: DDSketch, qs=(0.5, 0.9, 0.99)) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for q in qs:
        v = sketch.get_quantile_value(q) if sketch.count else None
        out[f"p{round(q * 100)}"] = None if v is None else int(round(v))
    return out
