"""Which records of each agent run arrived: duplicates out, gaps found and explained.

Every record names its run (`host`, `run_id`) and its place in it (`seq`,
+1 per record the agent wrote). Kafka delivery is at least once, so a
record can come twice (a retry, a spool replay): the second is a
duplicate. A seq that never comes is a record lost after it was numbered:
the agent reports the drops it knows of in `lost` records (stage sink,
with the seqs they cover), so a gap those do not cover is a silent loss
somewhere between the agent and this consumer.

Per run the seen seqs are kept as sorted, disjoint ranges: one range while
records come in order, one more per open gap. A gap is judged once it has
stayed open for `grace` seconds (a late record may still fill it) or when
the stream ends. Seqs before the first one read are not judged: the
consumer may have started after them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Lost:
    """A `lost` record of stage sink: `count` records of seqs in first..last (None: unknown)."""

    seq: int  # the lost record's own seq
    count: int
    reason: str
    first: int | None
    last: int | None


@dataclass
class Gap:
    host: str
    run_id: str
    first: int
    last: int
    explained_by: list  # the Lost records that cover it

    @property
    def missing(self) -> int:
        return self.last - self.first + 1

    @property
    def explained(self) -> bool:
        return bool(self.explained_by)


@dataclass
class Run:
    host: str
    run_id: str
    ranges: list = field(default_factory=list)  # sorted [lo, hi] of seen seqs
    lost: list = field(default_factory=list)  # Lost records of this run
    opened: dict = field(default_factory=dict)  # gap's first seq -> when it was first seen open
    judged: dict = field(default_factory=dict)  # first -> last seq of the gaps already reported
    unknown_budget: int = 0  # records that range-less lost records may still explain

    def add(self, seq: int) -> bool:
        """True for a seq not seen before."""
        r = self.ranges
        if r and seq == r[-1][1] + 1:  # in order: the common case
            r[-1][1] = seq
            return True
        i = bisect_right(r, [seq, float("inf")]) - 1  # the last range starting at or before seq
        if i >= 0 and r[i][0] <= seq <= r[i][1]:
            return False
        joins_left = i >= 0 and r[i][1] + 1 == seq
        joins_right = i + 1 < len(r) and r[i + 1][0] - 1 == seq
        if joins_left and joins_right:
            r[i][1] = r[i + 1][1]
            del r[i + 1]
        elif joins_left:
            r[i][1] = seq
        elif joins_right:
            r[i + 1][0] = seq
        else:
            r.insert(i + 1, [seq, seq])
        return True

    def holes(self):
        """(first, last) of each seq not seen between the first and the last seen one."""
        r = self.ranges
        for a, b in zip(r, r[1:]):
            yield a[1] + 1, b[0] - 1


class Ledger:
    """Runs by (host, run_id), at most `max_runs` (the least recently seen go first)."""

    def __init__(self, grace_s: float = 30.0, max_runs: int = 200_000):
        self.grace_s = grace_s
        self.max_runs = max_runs
        self.runs: OrderedDict[tuple[str, str], Run] = OrderedDict()
        self.duplicates = 0
        self.late = 0  # records that filled a gap already reported
        self.runs_dropped = 0

    def seen(self, host: str, run_id: str, seq: int) -> bool:
        """Notes a record; False when it is a duplicate."""
        key = (host, run_id)
        run = self.runs.get(key)
        if run is None:
            run = self.runs[key] = Run(host, run_id)
            if len(self.runs) > self.max_runs:
                self.runs.popitem(last=False)
                self.runs_dropped += 1
        else:
            self.runs.move_to_end(key)  # every record: the least recently seen run goes first
        if not run.add(seq):
            self.duplicates += 1
            return False
        if run.judged and any(first <= seq <= last for first, last in run.judged.items()):
            self.late += 1
        return True

    def note_lost(self, host: str, run_id: str, rec: dict) -> None:
        """A `lost` record of stage sink, for gaps of its run."""
        run = self.runs.get((host, run_id))
        if run is None:
            return
        lost = Lost(rec["seq"], rec.get("count") or 0, rec.get("reason") or "", rec.get("seq_first"),
                    rec.get("seq_last"))
        run.lost.append(lost)
        if lost.first is None:
            run.unknown_budget += lost.count

    def settle(self, now: float, final: bool = False) -> list[Gap]:
        """Gaps open for `grace` seconds (all of them when final), each reported once."""
        out = []
        for run in self.runs.values():
            if len(run.ranges) < 2 and not run.opened:
                continue
            still = {}
            for first, last in run.holes():
                if any(f <= first and last <= la for f, la in run.judged.items()):
                    continue  # reported already (a late record may have filled part of it)
                since = run.opened.get(first, now)
                if final or now - since >= self.grace_s:
                    run.judged[first] = last
                    out.append(Gap(run.host, run.run_id, first, last, _explain(run, first, last)))
                else:
                    still[first] = since
            run.opened = still
        return out


def _explain(run: Run, first: int, last: int) -> list[Lost]:
    """The lost records that account for seqs first..last: those whose range
    covers the gap, or, for drops without seqs, those after it whose
    counts are not used up yet."""
    covering = [lost for lost in run.lost
                if lost.first is not None and lost.first <= first and last <= lost.last]
    if covering:
        return covering
    need = last - first + 1
    if run.unknown_budget >= need:
        after = [lost for lost in run.lost if lost.first is None and lost.seq > last]
        if after:
            run.unknown_budget -= need
            return after[:1]
    return []
