"""Fixtures for the service tests: a temporary install tree and a temporary user."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .unitfile import INSTALL, TempUser, is_root


@pytest.fixture(scope="session")
def installed_root():
    """scripts/install.sh --root into a fresh directory; removed after the session.

    Under /var/lib, not /tmp: the unit's PrivateTmp= would hide a /tmp path
    from the service (the container test runs the unit from this tree).
    """
    if not is_root():
        pytest.skip("needs root (install.sh)")
    root = Path(tempfile.mkdtemp(prefix="connscope-test-root.", dir="/var/lib"))
    try:
        root.chmod(0o755)  # the service user walks into it
        cp = subprocess.run(["bash", str(INSTALL), "--root", str(root)], capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, cp.stderr
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def temp_user():
    if not is_root():
        pytest.skip("needs root (useradd)")
    user = TempUser()
    try:
        yield user
    finally:
        user.remove()
