"""ctypes mirror of bpf/connscope.h.

tests/kernel/test_layout.py compares this mirror with the struct BCC
compiles from the header (sizes and every field offset) and the constants
with the header's #defines, so a change on one side alone fails a test.
"""

import ctypes as C

EV_CONNECT, EV_ACCEPT, EV_CLOSE = 1, 2, 3

PID_SRC_UNKNOWN, PID_SRC_CONNECT, PID_SRC_SYSCALL = 0, 1, 2
PID_SRC_LISTENER, PID_SRC_FIRST_IO, PID_SRC_CLOSE = 3, 4, 5

DIR_OUTBOUND, DIR_INBOUND = 1, 2

CLOSED_BY_NONE, CLOSED_BY_LOCAL, CLOSED_BY_PEER, CLOSED_BY_RESET = 0, 1, 2, 3

F_PREEXISTING = 0x01
F_TIME_WAIT = 0x02
F_ABORTED = 0x04
F_SYSCALL_ONLY = 0x08
F_ESTABLISHED = 0x10
F_CLOSING = 0x20
F_INCOMPLETE = 0x40
F_AWAIT_ERR = 0x80

H_READ, H_KEEPALIVE, H_NODELAY = 0x01, 0x02, 0x04

HOOK_FENTRY, HOOK_KPROBE, HOOK_TRACEPOINT, HOOK_RAW_TP, HOOK_FD_WALK, HOOK_BTF_READ = 1, 2, 3, 4, 5, 6

CNT_EMITTED, CNT_LOST_RINGBUF, CNT_LOST_STATE_MAP, CNT_NOT_SENT = 0, 1, 2, 3
CNT_LISTENER_MAP, CNT_AGG_FULL, CNT_SAMPLED_OUT, CNT_FOLDED = 4, 5, 6, 7
CNT_SAMPLE_TICK, CNT_MAX = 8, 16

BIN_LATENCY, BIN_LIFETIME, BIN_FAILURE, BIN_CLOSE_ERROR, BIN_RTT = 1, 2, 3, 4, 5
DD_SUB_BITS, DD_SLOTS = 6, 4096

KNOB_GEN, KNOB_SHORT_LIFETIME_NS, KNOB_RECORDS, KNOB_KEEP_ONE_IN, KNOB_FOLD_AFTER, KNOB_MAX = 0, 1, 2, 3, 4, 8
REC_ALL, REC_FAILURES, REC_NONE, REC_ENDS = 0, 1, 2, 3


class ConnRecord(C.Structure):
    _fields_ = [
        ("ts_ns", C.c_uint64),
        ("start_ns", C.c_uint64),
        ("established_ns", C.c_uint64),
        ("end_ns", C.c_uint64),
        ("skaddr", C.c_uint64),
        ("cgroup_id", C.c_uint64),
        ("bytes_sent", C.c_uint64),
        ("bytes_received", C.c_uint64),
        ("pid", C.c_uint32),
        ("tid", C.c_uint32),
        ("saddr", C.c_uint8 * 16),
        ("daddr", C.c_uint8 * 16),
        ("syn_retransmits", C.c_uint32),
        ("synack_retransmits", C.c_uint32),
        ("retransmits", C.c_uint32),
        ("err", C.c_int32),
        ("resets_sent", C.c_uint32),
        ("resets_received", C.c_uint32),
        ("srtt_us", C.c_uint32),
        ("min_rtt_us", C.c_uint32),
        ("keepalive_idle", C.c_uint32),
        ("_pad2", C.c_uint32),
        ("sport", C.c_uint16),
        ("dport", C.c_uint16),
        ("family", C.c_uint16),
        ("mss", C.c_uint16),
        ("type", C.c_uint8),
        ("pid_source", C.c_uint8),
        ("direction", C.c_uint8),
        ("closed_by", C.c_uint8),
        ("flags", C.c_uint8),
        ("health", C.c_uint8),
        ("_pad1", C.c_uint8 * 2),
        ("comm", C.c_char * 16),
    ]


class AggKey(C.Structure):
    _fields_ = [
        ("cgroup_id", C.c_uint64),
        ("pid", C.c_uint32),
        ("port", C.c_uint16),
        ("family", C.c_uint16),
        ("daddr", C.c_uint8 * 16),
        ("comm", C.c_char * 16),
        ("direction", C.c_uint8),
        ("_pad0", C.c_uint8 * 7),
    ]


AGG_COUNT_FIELDS = (
    "connects_ok", "connects_failed", "accepts", "closes", "active_closes", "short_lived", "syn_stalled",
    "connects_untimed", "syn_retransmits", "synack_retransmits", "retransmits", "resets_sent", "resets_received",
    "latency_max_ns", "failure_records", "folded", "failure_wait_max_ns", "bytes_sent", "bytes_received",
    "nagle_holds",
)


class AggCounts(C.Structure):
    _fields_ = [(name, C.c_uint64) for name in AGG_COUNT_FIELDS]


class AggBinKey(C.Structure):
    _fields_ = [
        ("row", AggKey),
        ("index", C.c_int32),
        ("kind", C.c_uint8),
        ("_pad0", C.c_uint8 * 3),
    ]


class DdBin(C.Structure):
    _fields_ = [
        ("last", C.c_uint64),
        ("key", C.c_int32),
        ("_pad0", C.c_uint32),
    ]


class ListenerKey(C.Structure):
    _fields_ = [
        ("addr", C.c_uint8 * 16),
        ("port", C.c_uint16),
        ("family", C.c_uint16),
        ("_pad0", C.c_uint32),
    ]


class ListenerOwner(C.Structure):
    _fields_ = [
        ("cgroup_id", C.c_uint64),
        ("pid", C.c_uint32),
        ("_pad0", C.c_uint32),
        ("comm", C.c_char * 16),
    ]


RECORD_SIZE = C.sizeof(ConnRecord)
