"""A command on a real terminal: tmux runs it, tests read the screen as a person would."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from typing import Callable

import pytest

from .agentrun import REPO

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (scripts/setup.sh installs it)")


class Terminal:
    """`argv` in a detached tmux session `width` columns wide; killed by close()."""

    def __init__(self, argv: list[str], width: int = 200, height: int = 40):
        self.width = width
        self.session = f"cs{secrets.token_hex(4)}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                        "-c", str(REPO), " ".join(argv)], check=True)

    def screen(self, joined: bool = False) -> str:
        """What the terminal shows. `joined`: lines the terminal wrapped are
        joined again, so a wrapped line shows as one wider than the terminal."""
        cmd = ["tmux", "capture-pane", "-p", "-t", self.session] + (["-J"] if joined else [])
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def wait(self, pred: Callable[[str], object], timeout: float, what: str, joined: bool = False) -> str:
        """The first screen for which pred holds (fails with the last screen)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(joined)
            if pred(screen):
                return screen
            assert time.monotonic() < deadline, f"{what}: {screen}"
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
