"""systemd's notification protocol (sd_notify), written out: no dependency.

A notification is one datagram of newline-separated KEY=VALUE lines sent to
the AF_UNIX socket named by $NOTIFY_SOCKET: a path, or an abstract address
written with a leading '@'. systemd identifies the sender by the kernel's
SCM_CREDENTIALS, so with NotifyAccess=main any thread of the main process may
send. Without $NOTIFY_SOCKET (not under systemd, or Type= is not notify)
every call is a no-op. A failed send never stops the agent: it is counted in
`errors` and the last one kept in `last_error`.

The `sdnotify` package would do the sending, but not MONOTONIC_USEC, the
watchdog arithmetic or error accounting; the protocol itself is ten lines.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):  # abstract namespace: a leading NUL, no trailing one
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock: and other forms (systemd >= 253) are not used on our hosts


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period in seconds systemd set for this process, or None.

    None when WATCHDOG_USEC is unset or invalid, or when WATCHDOG_PID names
    another process (the variables were inherited, the watchdog is not ours).
    Ping at half of it, as sd_watchdog_enabled(3) advises.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000


class Notifier:
    """Sends READY, STATUS, WATCHDOG, RELOADING and STOPPING to systemd."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.errors = 0
        self.last_error: str | None = None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when a NOTIFY_SOCKET was given (we run under systemd, Type=notify)."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Sends one datagram of KEY=VALUE lines; True when it was sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                # Non-blocking: a receiver that stops reading (its queue holds
                # net.unix.max_dgram_qlen datagrams) must not stall the main loop;
                # a datagram it cannot take is counted in `errors`.
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as e:
            self.errors += 1
            self.last_error = f"notify {_shown(self.address)}: {e.strerror or e}"
            return False

    def ready(self, status: str | None = None) -> bool:
        """The service is up (after attach) or done reloading."""
        return self.send("READY=1", *([_status(status)] if status else []))

    def status(self, text: str) -> bool:
        """One free-form line shown by `systemctl status`."""
        return self.send(_status(text))

    def watchdog(self) -> bool:
        """The main loop is alive."""
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """A reload started; send ready() when it is done.

        MONOTONIC_USEC is CLOCK_MONOTONIC now: Type=notify-reload (systemd >=
        253) requires it, older versions ignore it.
        """
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        """Shutdown started."""
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    # a newline would start another KEY=VALUE line of the datagram
    return "STATUS=" + " ".join(text.splitlines())


def _shown(address: str | bytes) -> str:
    """How messages show an address: '@name' for abstract ones, else the path."""
    return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) else address


class WatchdogPinger:
    """Sends WATCHDOG=1 from the main loop at half the watchdog period.

    Call tick(now) every loop iteration with a monotonic clock in seconds: a
    loop that stops iterating stops pinging, and systemd restarts the service.
    Inactive (tick does nothing) when systemd set no watchdog for us.
    """

    def __init__(self, notifier: Notifier, interval: float | None = None):
        self.notifier = notifier
        self.interval = watchdog_interval() if interval is None else interval
        self.period = self.interval / 2 if self.interval else None
        self._next: float | None = None
        self.sent = 0

    def tick(self, now: float) -> bool:
        """Pings when one is due (the first call always pings); True when it did."""
        if self.period is None or not self.notifier.enabled:
            return False
        if self._next is not None and now < self._next:
            return False
        self._next = now + self.period
        if self.notifier.watchdog():
            self.sent += 1
            return True
        return False
