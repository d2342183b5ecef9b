"""The guest harness itself: what a command prints and returns comes back exactly."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from .conftest import require_guest
from .cpio import newc_archive
from .qemu import StockKernel

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.stock_kernel, pytest.mark.timeout(300)]


def test_newc_archive_layout():
    data = newc_archive([("bin/x", b"abc", 0o755)])
    # the directory first, then the file; every entry padded to 4 bytes
    assert data.startswith(b"070701") and data.count(b"070701") == 3
    assert b"bin\0" in data and b"bin/x\0" in data and b"TRAILER!!!\0" in data
    assert len(data) % 4 == 0
    head = data[data.index(b"bin/x") - 110:data.index(b"bin/x")]
    assert int(head[14:22], 16) == 0o100755 and int(head[54:62], 16) == 3  # mode, size


def test_a_guest_commands_output_status_and_files_come_back():
    release = StockKernel.releases()[0]
    kernel = require_guest(release)
    with tempfile.TemporaryDirectory() as tmp:  # /tmp, as the checkout may be
        script = f"""
uname -r
printf 'tab\\there, no newline'
echo ' to stderr' >&2
printf 'written in the guest\\n' >{tmp}/from-guest.txt
test -e /lib/modules/$(uname -r)/build/include/generated/autoconf.h && echo headers
test -e {REPO}/pyproject.toml && echo checkout
exit 7
"""
        result = kernel.run(script, timeout=120, outdir=Path(tmp))
        assert result.status == 7, result.explain()
        assert result.output == f"{release}\ntab\there, no newline to stderr\nheaders\ncheckout\n", result.explain()
        assert (Path(tmp) / "from-guest.txt").read_text() == "written in the guest\n"
