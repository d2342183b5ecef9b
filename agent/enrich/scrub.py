"""Command lines without their secrets, before anything leaves the agent.

Summaries and diagnoses carry the command line of the process they name,
and the service streams them to a central topic. Command lines routinely
carry credentials, so by default each argument that holds one is replaced
by MASK (the rules below; they err on the side of masking), once per
process: ProcessInfo caches the result.

- `--name=value`, `-name=value`, `NAME=value`: the value, when the name
  contains a sensitive word (DEFAULT_WORDS plus the configured ones);
- `--name value`, `-name value`: the next argument, likewise;
- short flags known to take a password: `mysql -pSECRET` (glued; a bare
  `-p` prompts and takes nothing), `redis-cli -a SECRET`, `sshpass -p`,
  `curl -u user:SECRET` / `--user`;
- the password of URL userinfo anywhere in an argument
  (`scheme://user:MASK@host`);
- a header argument whose name holds a sensitive word
  (`Authorization: MASK`, as `curl -H` takes it).
"""

from __future__ import annotations

import os
import re
from typing import Iterable

MASK = "********"
DEFAULT_WORDS = ("password", "passwd", "pwd", "secret", "token", "key", "apikey", "api_key", "access_key",
                 "auth", "credential", "private", "signature")

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@/\s]*@")
_HEADER = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s*:\s*\S")
_ASSIGNMENT = re.compile(r"^(-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)=")


def _program(argv0: str) -> str:
    return os.path.basename(argv0)


def _glued_password_flags(program: str) -> tuple[str, ...]:
    """Short flags whose value may be glued to them (-pSECRET), by program."""
    if program.startswith(("mysql", "mariadb")) or program == "sshpass":
        return ("-p",)
    if program == "curl":
        return ("-u",)
    return ()


def _separate_password_flags(program: str) -> tuple[str, ...]:
    """Short flags that take the secret as the next argument, by program.
    mysql's bare -p prompts and takes nothing, so it is not here."""
    if program == "redis-cli":
        return ("-a",)
    if program == "sshpass":
        return ("-p",)
    if program == "curl":
        return ("-u", "--user", "-U", "--proxy-user")
    return ()


class Scrubber:
    """scrub(argv) -> argv with every secret replaced by MASK."""

    def __init__(self, extra_words: Iterable[str] = ()):
        self.words = tuple(dict.fromkeys(w.lower() for w in (*DEFAULT_WORDS, *extra_words) if w))

    def sensitive(self, name: str) -> bool:
        name = name.lstrip("-").lower()
        return any(w in name for w in self.words)

    def _user_secret(self, value: str) -> str:
        """curl's user:password keeps the user."""
        user, sep, _ = value.partition(":")
        return f"{user}:{MASK}" if sep else MASK

    def scrub(self, argv: list[str]) -> list[str]:
        if not argv:
            return argv
        program = _program(argv[0])
        glued, separate = _glued_password_flags(program), _separate_password_flags(program)
        out = [argv[0]]
        mask_next = None  # how to mask the next argument, when a flag asked for it
        for arg in argv[1:]:
            if mask_next is not None:
                out.append(mask_next(arg))
                mask_next = None
                continue
            done = self._scrub_one(arg, glued)
            out.append(done)
            if done != arg:  # its own value was masked: the next one is no value
                continue
            if arg in separate:
                mask_next = self._user_secret if arg in ("-u", "--user", "-U", "--proxy-user") else (lambda a: MASK)
            elif arg.startswith("-") and arg != "--" and "=" not in arg and self.sensitive(arg) \
                    and len(arg) > 2:  # -x alone is some other tool's flag
                mask_next = lambda a: MASK  # noqa: E731
        return out

    def _scrub_one(self, arg: str, glued: tuple[str, ...]) -> str:
        m = _ASSIGNMENT.match(arg)
        if m and self.sensitive(m.group(1)):
            return f"{m.group(1)}={MASK}"
        for flag in glued:
            if arg.startswith(flag) and len(arg) > len(flag) and not arg.startswith("--"):
                value = arg[len(flag):]
                return flag + (self._user_secret(value) if flag == "-u" else MASK)
        h = _HEADER.match(arg)
        if h and not arg.startswith("-") and "://" not in arg and self.sensitive(h.group(1)):
            return f"{h.group(1)}: {MASK}"
        return _URL_PASSWORD.sub(rf"\1:{MASK}@", arg)
