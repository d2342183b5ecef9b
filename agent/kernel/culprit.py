"""Which hook a failed compile, load or attach belongs to.

BCC compiles every chosen method into one program text and raises a bare
Exception for anything that goes wrong after that. To move only the guilty
hook to its next method (and keep the agent running), the failure is traced
back to a method two ways:
- a load or attach failure names, or was raised while handling, one BPF
  function, and each method lists its functions (Method.programs);
- a compile error names a line of one of bpf/'s files (line_markers keep
  clang's numbering ours), and each method's C sits under a preprocessor
  guard on its -D flag (`#if CONNECT_HOOK == HOOK_FENTRY`,
  `#if HAVE_RETRANSMIT == HOOK_RAW_TP`): the innermost guard around the line
  that names a hook's flag is that hook's chosen method.
"""

from __future__ import annotations

import re
from typing import Iterable

_PROGRAM_IN_MESSAGE = re.compile(r"BPF program b?'?([A-Za-z0-9_]+)")
# clang's diagnostics, in the file and line that line markers() set
_ERROR = re.compile(r"^(\S+?):(\d+):\d+: (?:fatal )?error: (.*)$")
_INCLUDED_FROM = re.compile(r"^In file included from (\S+?):(\d+):")
_DIRECTIVE = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def line_markers(name: str, text: str) -> str:
    """`text` with a `#line N "name"` before each of its lines (except
    inside a multi-line macro), so that clang names our own file and line
    whatever BCC inserts into the program text before compiling it (it
    adds each tracepoint's record struct ahead of its probe)."""
    out, continued = [], False
    for n, line in enumerate(text.splitlines(), start=1):
        if not continued:
            out.append(f'#line {n} "{name}"')
        out.append(line)
        continued = line.endswith("\\")
    return "\n".join(out) + "\n"


def failed_program(err: BaseException) -> str | None:
    """The BPF function a load/attach exception is about: named in its
    message, or else the innermost BCC frame's fn_name/func_name (BCC's
    "Failed to attach BPF to entry kernel func" names none)."""
    m = _PROGRAM_IN_MESSAGE.search(str(err))
    if m:
        return m.group(1)
    found = None
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if "bcc" in frame.f_code.co_filename:
            for name in ("fn_name", "func_name"):
                val = frame.f_locals.get(name)
                if isinstance(val, (bytes, str)) and val:
                    found = val.decode() if isinstance(val, bytes) else val
        tb = tb.tb_next
    return found


def compile_errors(diagnostics: str, files: Iterable[str]) -> list[tuple[str, int, str]]:
    """(file, line, message) of each error clang reported in one of `files`:
    an error inside a header counts at the #include that brought it in."""
    ours = set(files)
    out, included_at = [], None
    for src in diagnostics.splitlines():
        inc = _INCLUDED_FROM.match(src)
        if inc:
            if inc.group(1) in ours and included_at is None:
                included_at = (inc.group(1), int(inc.group(2)))
            continue
        err = _ERROR.match(src)
        if err and err.group(1) in ours:
            out.append((err.group(1), int(err.group(2)), err.group(3).strip()))
        elif err and included_at is not None:
            out.append((*included_at, err.group(3).strip()))
        if err:
            included_at = None
    return out


def guards_at(text: str, line: int) -> list[str]:
    """The conditions of the #if/#elif blocks enclosing `line` (1-based),
    innermost last. An #else block keeps its #if's condition: the guard
    still names the same flag."""
    stack: list[str] = []
    for i, src in enumerate(text.splitlines()[: line - 1], start=1):
        m = _DIRECTIVE.match(src)
        if not m:
            continue
        kind, cond = m.group(1), m.group(2).strip()
        if kind in ("if", "ifdef", "ifndef"):
            stack.append(cond)
        elif kind == "elif" and stack:
            stack[-1] = cond
        elif kind == "endif" and stack:
            stack.pop()
    return stack


def guarding_flag(text: str, line: int, flags: Iterable[str]) -> str | None:
    """The innermost of `flags` that a guard around `line` names; in a guard
    that names several (`#if HAVE_SO_ERROR_SYSCALL && HAVE_CONNECT_SYSCALL`),
    the first: bpf/ names the hook that owns the code first."""
    wanted = set(flags)
    for cond in reversed(guards_at(text, line)):
        for word in _WORD.findall(cond):
            if word in wanted:
                return word
    return None
