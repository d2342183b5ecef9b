/* connscope.h: the one definition of what the kernel side keeps and emits.
 *
 * Included by maps.c, which every other file of bpf/ follows. agent/decode/layout.py mirrors
 * struct conn_record with ctypes; tests/kernel/test_layout.py checks that
 * mirror against the layout BCC's compiler produces, so drift fails a test.
 *
 * Rules for this file: fixed-width fields only, largest first, explicit
 * padding, and nothing that depends on kernel struct layouts.
 */
#ifndef CONNSCOPE_H
#define CONNSCOPE_H

/* Record types (conn_record.type). */
#define EV_CONNECT 1 /* an outbound attempt resolved: established or failed */
#define EV_ACCEPT 2  /* an inbound connection established */
#define EV_CLOSE 3   /* a connection ended */

/* How conn_record.pid was obtained. Softirq context is never trusted. */
#define PID_SRC_UNKNOWN 0
#define PID_SRC_CONNECT 1  /* the task that entered the TCP connect path */
#define PID_SRC_SYSCALL 2  /* the task returning from connect(2) */
#define PID_SRC_LISTENER 3 /* the task that called listen() on the listener */
#define PID_SRC_FIRST_IO 4 /* the first task that read or wrote the socket */
#define PID_SRC_CLOSE 5    /* the task that called close() (pre-existing) */

#define DIR_OUTBOUND 1
#define DIR_INBOUND 2

#define CLOSED_BY_NONE 0
#define CLOSED_BY_LOCAL 1
#define CLOSED_BY_PEER 2
#define CLOSED_BY_RESET 3

/* conn_record.flags */
#define F_PREEXISTING 0x01 /* started before connscope: start unknown */
#define F_TIME_WAIT 0x02   /* this side closed first: a TIME_WAIT socket remains */
#define F_ABORTED 0x04     /* the application closed it during the handshake */
#define F_SYSCALL_ONLY 0x08 /* connect(2) failed before TCP saw the socket */
#define F_ESTABLISHED 0x10 /* reached ESTABLISHED */
#define F_CLOSING 0x20     /* reached CLOSE; waiting for the errno, if any */
#define F_INCOMPLETE 0x40  /* the kernel skipped one of this socket's events */

/* Attach methods: the value of a hook's -D flag (HAVE_*, CONNECT_HOOK) when
 * the loader chose that method for it (agent/kernel/hooks.py); 0 = none. */
#define HOOK_FENTRY 1
#define HOOK_KPROBE 2
#define HOOK_TRACEPOINT 3
#define HOOK_RAW_TP 4 /* raw tracepoint: its own recursion guard, not the shared one */

/* Indexes of the per-CPU counters map (counters). */
#define CNT_EMITTED 0        /* records handed to the ring/perf buffer */
#define CNT_LOST_RINGBUF 1   /* records dropped: buffer full */
#define CNT_LOST_STATE_MAP 2 /* sockets not tracked: state map update failed */
#define CNT_LISTENER_MAP 4   /* listeners not tracked: map update failed */
#define CNT_PROC_COUNTS 5    /* per-process counts not kept: map full */
#define CNT_MAX 8

/* struct conn_record is both the per-socket state (map value keyed by the
 * socket's address) and the emitted record: emitting copies it whole. */
struct conn_record {
	__u64 ts_ns;          /* CLOCK_MONOTONIC at emit */
	__u64 start_ns;       /* connect() entry (outbound) or child creation (inbound) */
	__u64 established_ns; /* 0 when never established */
	__u64 end_ns;         /* failure or close time; 0 while open */
	__u64 skaddr;         /* kernel socket address: a key, never dereferenced */
	__u64 cgroup_id;      /* cgroup v2 id of pid at attribution time */
	__u32 pid;            /* tgid */
	__u32 tid;
	__u8 saddr[16];       /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u32 syn_retransmits;
	__u32 synack_retransmits;
	__u32 retransmits;    /* retransmit events after the handshake */
	__s32 err;            /* positive errno, 0 when none */
	__u32 resets_sent;    /* 32-bit: BPF has no 16-bit atomic add */
	__u32 resets_received;
	__u16 sport;
	__u16 dport;
	__u16 family;         /* AF_INET (2) or AF_INET6 (10) */
	__u16 _pad0;
	__u8 type;            /* EV_* (0 in map state) */
	__u8 pid_source;      /* PID_SRC_* */
	__u8 direction;       /* DIR_* */
	__u8 closed_by;       /* CLOSED_BY_* */
	__u8 flags;           /* F_* */
	__u8 _pad1[3];
	char comm[16];
};

/* Per-process counts, kept in the kernel so that window summaries stay
 * exact when records are lost in the buffer. Cumulative; user space
 * takes deltas. */
#define PC_CONNECT_OK 1
#define PC_CONNECT_FAILED 2 /* err = errno, 0 for an abandoned connect */
#define PC_ACCEPT 3
#define PC_CLOSE 4
#define PC_ACTIVE_CLOSE 5  /* a close that left TIME_WAIT here */

struct proc_count_key {
	__u32 pid;
	__u16 err;
	__u8 kind; /* PC_* */
	__u8 _pad0;
};

/* Listening sockets: who owns the port. Address is zero for a wildcard. */
struct listener_key {
	__u8 addr[16];
	__u16 port;
	__u16 family;
	__u32 _pad0;
};

struct listener_owner {
	__u64 cgroup_id;
	__u32 pid;
	__u32 _pad0;
	char comm[16];
};

/* A connect(2) in flight, per thread. */
struct connect_call {
	__u64 start_ns;
	__u64 skaddr;      /* set when TCP's connect path ran in this call */
	__u8 daddr[16];
	__u16 dport;
	__u16 family;
	__u32 fd;
};

#endif /* CONNSCOPE_H */
