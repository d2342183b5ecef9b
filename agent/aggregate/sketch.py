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

RELATIVE_ACCURACY = 0.01  # quantiles within 1% of the true value


def new() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


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
