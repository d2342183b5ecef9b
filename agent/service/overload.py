"""Overload control: keep the agent's user-space CPU under a budget by sampling.

Measured once a second as the share of one core the whole process used.
Over budget for two checks in a row, per-connection records that are not
failures are thinned to one in N: N grows by the power of two at or above
share / budget at once (a churn 8 times the budget is met in one step, not
three doublings two seconds apart), up to 1024; back under half the budget
for five checks, N halves until it is 1 again. The
sampling is done in the kernel (Policy.keep_one_in -> knobs[KNOB_KEEP_ONE_IN]),
so the records left out never cost the reader anything, and it comes after
the kernel counted them, so summaries stay exact. Each change is announced
with an `agent` record (event "sampling").
"""

from __future__ import annotations

import dataclasses
import math

from ..metrics.selfstats import CpuMeter

MAX_KEEP_ONE_IN = 1024


class OverloadControl:
    CHECK_S = 1.0
    OVER_CHECKS = 2
    UNDER_CHECKS = 5

    def __init__(self, pipeline, budget: float, now: float):
        self.pipe = pipeline
        self.budget = budget
        self.meter = CpuMeter(now)
        self._next = now + self.CHECK_S
        self._over = self._under = 0
        self.last_share = 0.0

    def tick(self, now: float) -> dict | None:
        """Fields of a "sampling" agent record when the rate changes, else None."""
        if now < self._next:
            return None
        self._next = now + self.CHECK_S
        share = self.last_share = self.meter.share(now)
        if share > self.budget:
            self._over, self._under = self._over + 1, 0
        elif share < self.budget / 2:
            self._over, self._under = 0, self._under + 1
        else:
            self._over = self._under = 0
        old = self.pipe.policy.keep_one_in
        new = old
        if self._over >= self.OVER_CHECKS and old < MAX_KEEP_ONE_IN:
            new, self._over = min(MAX_KEEP_ONE_IN, old * step_for(share, self.budget)), 0
        elif self._under >= self.UNDER_CHECKS and old > 1:
            new, self._under = old // 2, 0
        if new == old:
            return None
        self.pipe.set_policy(dataclasses.replace(self.pipe.policy, keep_one_in=new))
        return {"active": new > 1, "keep_one_in": new, "previous_keep_one_in": old,
                "cpu_share": round(share, 4), "cpu_budget": self.budget,
                "sampled_out": self.pipe.sampled_out}


def step_for(share: float, budget: float) -> int:
    """The factor N grows by: the power of two at or above share / budget, at least 2."""
    return max(2, 1 << math.ceil(math.log2(share / budget)))
