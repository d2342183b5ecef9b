"""The stock-kernel tier: Debian's own kernels booted under QEMU (tests/stock_kernel/qemu.py).

Production hosts run kernels with kprobes, fentry and matching headers;
this machine's kernel has none of them. Here each stock kernel runs the
kernel tier's own tests (tests/kernel) against itself, once per method of
tcp_connect, with one agent per guest (a compile costs seconds of emulated
CPU). Guests boot two at a time, one per core, as soon as the first test
asks for one.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from .qemu import GuestUnavailable, StockKernel


def require_guest(release: str) -> StockKernel:
    """The kernel, or a skip that says why (a failure where scripts/test.sh
    set the tier up and so it must run: CSTEST_REQUIRE_STOCK_KERNELS=1)."""
    try:
        return StockKernel.find(release)
    except GuestUnavailable as why:
        if os.environ.get("CSTEST_REQUIRE_STOCK_KERNELS") == "1":
            pytest.fail(f"stock kernel {release} cannot boot here: {why}")
        pytest.skip(f"stock kernel {release} cannot boot here: {why}")


class GuestPool:
    """Runs guests in the background, two at a time; results by key."""

    def __init__(self, workers: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="guest")
        self._futures: dict[object, Future] = {}

    def submit(self, key, fn, *args) -> Future:
        if key not in self._futures:
            self._futures[key] = self._pool.submit(fn, *args)
        return self._futures[key]

    def close(self) -> None:
        for f in self._futures.values():
            f.cancel()
        self._pool.shutdown(wait=True)


@pytest.fixture(scope="session")
def guest_pool():
    pool = GuestPool()
    try:
        yield pool
    finally:
        pool.close()
