"""Shared fixtures: network namespace pairs and the traffic peer (tests/netlab.py, tests/tools/peer.py)."""

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import netlab  # noqa: E402
from netlab import NetPair, json_lines, read_json_lines, wait_json_line  # noqa: E402,F401  (re-exported)

__all__ = ["NetPair", "json_lines", "read_json_lines", "wait_json_line"]

PEER = os.path.join(TESTS_DIR, "tools", "peer.py")
PYTHON = "/usr/bin/python3"


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_netns():
    """Remove namespaces left by an earlier crashed run (only those whose owner is dead)."""
    if is_root():
        netlab.sweep_stale()
    yield


@pytest.fixture
def netpair():
    """A fresh client/server namespace pair, deleted after the test even when it fails."""
    if not is_root():
        pytest.skip("needs root (network namespaces)")
    pair = NetPair()
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture(scope="session")
def peer_cmd():
    """peer_cmd("client", "--addr", ...) -> argv running tests/tools/peer.py with Debian's python."""
    def build(*args):
        return [PYTHON, PEER, *map(str, args)]
    return build
