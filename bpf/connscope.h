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
#define F_AWAIT_ERR 0x80   /* in the closing map, waiting for its error report (never emitted) */

/* conn_record.health: what was read from the socket at CLOSE */
#define H_READ 0x01      /* the health fields were read */
#define H_KEEPALIVE 0x02 /* SO_KEEPALIVE was on */
#define H_NODELAY 0x04   /* TCP_NODELAY was on */

/* Attach methods: the value of a hook's -D flag (HAVE_*, CONNECT_HOOK) when
 * the loader chose that method for it (agent/kernel/hooks.py); 0 = none. */
#define HOOK_FENTRY 1
#define HOOK_KPROBE 2
#define HOOK_TRACEPOINT 3
#define HOOK_RAW_TP 4 /* raw tracepoint: its own recursion guard, not the shared one */
#define HOOK_FD_WALK 5 /* socket_syscall: the fd's socket read when a connect fails */
#define HOOK_BTF_READ 6 /* socket_health: tcp_sock fields read at BTF offsets */

/* Indexes of the per-CPU counters map (counters). */
#define CNT_EMITTED 0        /* records handed to the ring/perf buffer */
#define CNT_LOST_RINGBUF 1   /* records dropped: buffer full */
#define CNT_LOST_STATE_MAP 2 /* sockets not tracked: state map update failed */
#define CNT_NOT_SENT 3       /* records not sent: KNOB_RECORDS asked for fewer */
#define CNT_LISTENER_MAP 4   /* listeners not tracked: map update failed */
#define CNT_AGG_FULL 5       /* aggregation rows or bins not kept: map full */
#define CNT_SAMPLED_OUT 6    /* records not sent: sampled out (KNOB_KEEP_ONE_IN) */
#define CNT_FOLDED 7         /* failure records not sent: folded (KNOB_FOLD_AFTER) */
#define CNT_SAMPLE_TICK 8    /* not a count: the sampling position (emit.c) */
#define CNT_MAX 16

/* struct conn_record is both the per-socket state (map value keyed by the
 * socket's address) and the emitted record: emitting copies it whole. */
struct conn_record {
	__u64 ts_ns;          /* CLOCK_MONOTONIC at emit */
	__u64 start_ns;       /* connect() entry (outbound) or child creation (inbound) */
	__u64 established_ns; /* 0 when never established */
	__u64 end_ns;         /* failure or close time; 0 while open */
	__u64 skaddr;         /* kernel socket address: a key, never dereferenced */
	__u64 cgroup_id;      /* cgroup v2 id of pid at attribution time */
	/* Socket health, read when an established connection reaches CLOSE
	 * (bpf/health.c); 0 with H_READ clear when it was not read. */
	__u64 bytes_sent;     /* payload acknowledged by the peer: no SYN, no FIN */
	__u64 bytes_received; /* payload received: no FIN */
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
	__u32 srtt_us;        /* smoothed RTT, us */
	__u32 min_rtt_us;     /* the lowest RTT seen (the kernel's windowed minimum) */
	__u32 keepalive_idle; /* TCP_KEEPIDLE set on the socket, in jiffies; 0 = the netns default */
	__u32 _pad2;
	__u16 sport;
	__u16 dport;
	__u16 family;         /* AF_INET (2) or AF_INET6 (10) */
	__u16 mss;            /* the current send MSS */
	__u8 type;            /* EV_* (0 in map state) */
	__u8 pid_source;      /* PID_SRC_* */
	__u8 direction;       /* DIR_* */
	__u8 closed_by;       /* CLOSED_BY_* */
	__u8 flags;           /* F_* */
	__u8 health;          /* H_* */
	__u8 _pad1[2];
	char comm[16];
};

/* Kernel aggregation (bpf/aggregate.c): one row of counts per (process,
 * destination, direction) and sparse histogram bins, in per-CPU maps that
 * user space takes whole once per window. A process is (pid, comm,
 * cgroup); a destination is the remote address and port of an outbound
 * connection, or the local listening port of an inbound one (address 0). */
struct agg_key {
	__u64 cgroup_id;
	__u32 pid;
	__u16 port;
	__u16 family;
	__u8 daddr[16];
	char comm[16];
	__u8 direction; /* DIR_* */
	__u8 _pad0[7];
};

struct agg_counts {
	__u64 connects_ok;
	__u64 connects_failed;
	__u64 accepts;
	__u64 closes;
	__u64 active_closes;   /* closes that left TIME_WAIT here */
	__u64 short_lived;     /* closes that lived less than KNOB_SHORT_LIFETIME_NS */
	__u64 syn_stalled;     /* successful connects that needed SYN retransmits */
	__u64 connects_untimed; /* successful connects without a handshake time */
	__u64 syn_retransmits;
	__u64 synack_retransmits;
	__u64 retransmits;
	__u64 resets_sent;
	__u64 resets_received;
	__u64 latency_max_ns;
	__u64 failure_records; /* failure records sent this window */
	__u64 folded;          /* failure records not sent: over KNOB_FOLD_AFTER */
	__u64 failure_wait_max_ns; /* the longest a failed connect waited, start to failure */
	__u64 bytes_sent;      /* payload of the closes whose socket was read (H_READ) */
	__u64 bytes_received;
	__u64 nagle_holds;     /* small writes Nagle's algorithm held back (bpf/nagle.c) */
};

/* agg_bin_key.kind */
#define BIN_LATENCY 1  /* index: DDSketch key of the handshake time in us */
#define BIN_LIFETIME 2 /* index: DDSketch key of the lifetime in us */
#define BIN_FAILURE 3  /* index: errno, 0 for an abandoned connect */
#define BIN_CLOSE_ERROR 4 /* index: errno of an established connection that ended with one */
#define BIN_RTT 5      /* index: DDSketch key of a closing connection's smoothed RTT in us */

struct agg_bin_key {
	struct agg_key row;
	__s32 index;
	__u8 kind; /* BIN_* */
	__u8 _pad0[3];
};

/* One slot of the DDSketch bin table, filled by user space
 * (agent/kernel/ddbins.py): a value v (ns) whose leading bit and next
 * DD_SUB_BITS bits select this slot has the DDSketch key `key`, or
 * key + 1 when v > `last`. A slot spans less than one bin, so it
 * straddles at most one bin boundary. */
#define DD_SUB_BITS 6
#define DD_SLOTS 4096 /* 64 octaves << DD_SUB_BITS */
struct dd_bin {
	__u64 last;
	__s32 key;
	__u32 _pad0;
};

/* Indexes of the knobs array: what user space tells the programs. */
#define KNOB_GEN 0                /* which of the two aggregation maps is live */
#define KNOB_SHORT_LIFETIME_NS 1  /* a close that lived less is short_lived */
#define KNOB_RECORDS 2            /* REC_*: which connection records to send */
#define KNOB_KEEP_ONE_IN 3        /* sampling of records that are not failures */
#define KNOB_FOLD_AFTER 4         /* failure records per row and window; 0 = all */
#define KNOB_MAX 8

/* knobs[KNOB_RECORDS]. The first record of a window row is always sent:
 * user space reads its process's command line and unit from it while the
 * process exists. */
#define REC_ALL 0
#define REC_FAILURES 1
#define REC_NONE 2
#define REC_ENDS 3 /* closes and failed attempts: one record per connection */

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
