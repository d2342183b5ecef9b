"""Tracing a failed compile or load back to one hook's method (agent/kernel/culprit.py)."""

from agent.kernel import culprit

STATE_C = """\
#if CONNECT_HOOK == HOOK_FENTRY
KFUNC_PROBE(tcp_connect, struct sock *sk)
{
}
#elif CONNECT_HOOK == HOOK_KPROBE
int kprobe__tcp_connect(struct pt_regs *ctx)
#else
int other;
#endif
#ifdef OFF_SK_PROTOCOL
#define TWO_LINES(x) \\
	(x)
#if HAVE_FIRST_IO
int shared;
#endif
#endif
"""


def test_line_markers_number_each_line_of_the_file_but_not_inside_a_macro():
    out = culprit.line_markers("state.c", STATE_C).splitlines()
    assert out[:4] == ['#line 1 "state.c"', "#if CONNECT_HOOK == HOOK_FENTRY",
                       '#line 2 "state.c"', "KFUNC_PROBE(tcp_connect, struct sock *sk)"]
    i = out.index("#define TWO_LINES(x) \\")
    assert out[i + 1] == "\t(x)"  # no marker splits a macro
    assert out[i + 2] == '#line 13 "state.c"'


def test_compile_errors_in_our_files_and_in_headers_they_include():
    diag = """\
In file included from <built-in>:2:
/virtual/include/bcc/helpers.h:5:1: warning: something
state.c:517:1: error: conflicting types for '____kfunc__tcp_connect'
In file included from state.c:61:
In file included from /usr/src/linux-headers/include/uapi/linux/ptrace.h:3:
/usr/src/linux-headers/arch/x86/include/asm/ptrace.h:9:2: error: unknown type name 'foo'
/virtual/main.c:3:1: error: not one of ours
"""
    assert culprit.compile_errors(diag, ["state.c", "io.c"]) == [
        ("state.c", 517, "conflicting types for '____kfunc__tcp_connect'"),
        ("state.c", 61, "unknown type name 'foo'"),
    ]


def test_the_innermost_guard_naming_a_hook_flag_is_blamed():
    flags = {"CONNECT_HOOK", "HAVE_FIRST_IO"}
    assert culprit.guards_at(STATE_C, 3) == ["CONNECT_HOOK == HOOK_FENTRY"]
    assert culprit.guarding_flag(STATE_C, 2, flags) == "CONNECT_HOOK"
    assert culprit.guarding_flag(STATE_C, 6, flags) == "CONNECT_HOOK"  # the #elif
    assert culprit.guarding_flag(STATE_C, 8, flags) == "CONNECT_HOOK"  # the #else
    assert culprit.guarding_flag(STATE_C, 14, flags) == "HAVE_FIRST_IO"  # inside #ifdef OFF_...
    assert culprit.guarding_flag(STATE_C, 12, flags) is None  # shared code: nobody's method


def test_a_load_failure_names_its_program_by_message_or_by_bccs_frame():
    assert culprit.failed_program(Exception("Failed to load BPF program b'kprobe__tcp_connect': EPERM")) \
        == "kprobe__tcp_connect"

    def attach_kfunc(fn_name=b"kfunc__vmlinux__tcp_sendmsg"):  # as bcc/__init__.py names it
        raise Exception("Failed to attach BPF to entry kernel func")

    attach_kfunc.__code__ = attach_kfunc.__code__.replace(co_filename="/usr/lib/python3/dist-packages/bcc/__init__.py")
    try:
        attach_kfunc()
    except Exception as err:
        assert culprit.failed_program(err) == "kfunc__vmlinux__tcp_sendmsg"


def test_a_guard_naming_two_hooks_blames_the_first():
    text = "#if HAVE_SO_ERROR_SYSCALL && HAVE_CONNECT_SYSCALL\nbroken;\n#endif\n"
    assert culprit.guarding_flag(text, 2, {"HAVE_CONNECT_SYSCALL", "HAVE_SO_ERROR_SYSCALL"}) == "HAVE_SO_ERROR_SYSCALL"
