/* maps.c: maps, counters and the small helpers every concern shares.
 *
 * Compile-time knobs arrive as -D integers from agent/kernel/loader.py;
 * the defaults below are what runs when they are absent.
 */
#include "connscope.h"

#ifndef USE_RINGBUF
#define USE_RINGBUF 1
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 2048 /* 8 MiB: about 60k records of burst */
#endif
#ifndef MAX_SOCKS
#define MAX_SOCKS 65536
#endif
#ifndef MAX_LISTENERS
#define MAX_LISTENERS 4096
#endif
#ifndef MAX_CALLS
#define MAX_CALLS 16384
#endif

/* Hooks the loader chose on this kernel (agent/kernel/hooks.py): 0 for
 * none, else the method (HOOK_* in connscope.h). */
#ifndef HAVE_LIFECYCLE
#define HAVE_LIFECYCLE 1
#endif
#ifndef HAVE_ERROR_REPORT
#define HAVE_ERROR_REPORT 1
#endif
#ifndef HAVE_DESTROY
#define HAVE_DESTROY 1
#endif
#ifndef HAVE_CONNECT_SYSCALL
#define HAVE_CONNECT_SYSCALL 1
#endif
#ifndef HAVE_SOCKET_SYSCALL
#define HAVE_SOCKET_SYSCALL 1
#endif
#ifndef HAVE_RETRANSMIT
#define HAVE_RETRANSMIT 1
#endif
#ifndef HAVE_SYNACK_RETRANSMIT
#define HAVE_SYNACK_RETRANSMIT 1
#endif
#ifndef HAVE_RESET_SENT
#define HAVE_RESET_SENT 1
#endif
#ifndef HAVE_RESET_RECEIVED
#define HAVE_RESET_RECEIVED 1
#endif
#ifndef HAVE_FIRST_IO
#define HAVE_FIRST_IO 1
#endif
#ifndef HAVE_SO_ERROR_SYSCALL
#define HAVE_SO_ERROR_SYSCALL 1
#endif

#ifndef CONNECT_HOOK
#define CONNECT_HOOK HOOK_TRACEPOINT
#endif

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define EINPROGRESS 115
#define EALREADY 114
#define EISCONN 106

/* Kernel TCP states (include/net/tcp_states.h: stable since 2.6). */
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_SYN_RECV 3
#define ST_FIN_WAIT1 4
#define ST_FIN_WAIT2 5
#define ST_TIME_WAIT 6
#define ST_CLOSE 7
#define ST_CLOSE_WAIT 8
#define ST_LAST_ACK 9
#define ST_LISTEN 10
#define ST_CLOSING 11

/* A connection's identity as the tracepoints without skaddr show it
 * (inet_sk_error_report, tcp_retransmit_synack). */
struct tuple_key {
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 _pad0;
};

/* Per-socket state, keyed by the kernel socket address. LRU so that a
 * socket whose end we never see cannot fill the map for good; entries are
 * deleted as soon as their last record is emitted. */
BPF_TABLE("lru_hash", u64, struct conn_record, socks, MAX_SOCKS);
BPF_TABLE("lru_hash", struct listener_key, struct listener_owner, listeners, MAX_LISTENERS);
/* connect(2) calls in flight, by thread id. */
BPF_TABLE("lru_hash", u32, struct connect_call, calls, MAX_CALLS);
/* Sockets closed and waiting for their errno (tuple -> skaddr), and errnos
 * reported before their socket reached CLOSE (tuple -> errno). */
BPF_TABLE("lru_hash", struct tuple_key, u64, closing, MAX_CALLS);
BPF_TABLE("lru_hash", struct tuple_key, s32, early_err, MAX_CALLS);
/* SYN-ACK retransmits of handshakes whose child socket does not exist yet. */
BPF_TABLE("lru_hash", struct tuple_key, u32, synacks, MAX_CALLS);
/* Never written: the zeroed template new states are copied from. */
BPF_ARRAY(zero_record, struct conn_record, 1);
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
#if USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
/* What user space tells the programs (KNOB_* in connscope.h); all 0 at load. */
BPF_ARRAY(knobs, u64, KNOB_MAX);

static __always_inline u64 knob(u32 idx)
{
	u64 *v = knobs.lookup(&idx);
	return v ? *v : 0;
}

static __always_inline void count(u32 idx)
{
	u64 *c = counters.lookup(&idx);
	if (c) /* per-CPU, but a raw tracepoint program can interrupt another here */
		__sync_fetch_and_add(c, 1);
}

/* Only for hooks that run in the owning task's context. */
static __always_inline void owner_from_current(struct conn_record *st, u8 source)
{
	u64 id = bpf_get_current_pid_tgid();
	st->pid = id >> 32;
	st->tid = (u32)id;
	st->cgroup_id = bpf_get_current_cgroup_id();
	st->pid_source = source;
	bpf_get_current_comm(&st->comm, sizeof(st->comm));
}

/* A raw tracepoint program with a backup (agent/kernel/hooks.py, backup=True).
 * The kernel skips a raw tracepoint program while that same program runs on
 * the CPU, so an event in a softirq that interrupts the main program (running
 * for a task's connect() or close()) would be lost. The backup is another
 * program on the same tracepoint, which the loader attaches after the main
 * one, so it runs after it for every event: it handles the event unless the
 * main program did.
 *
 * The main program notes each event it handled (the tracepoint's arguments)
 * in a few per-CPU slots; the backup takes its event's note out, or handles
 * the event when there is none. A flag set while the main program runs (the
 * first design) missed events: the kernel marks the program active before
 * its first instruction and after its last, and an interrupt in those gaps
 * found the flag clear (measured: 91 of 426 skipped runs in a 20,000
 * connection burst lost their CLOSE). Notes, not a flag, have no such gap:
 * a skipped run writes none. Nested events each find their own note, so an
 * event is never handled twice. */
#define BUSY_inet_sock_set_state 0
#define BUSY_tcp_destroy_sock 1
#define HANDLED_SLOTS 4 /* nesting on one CPU is at most task, softirq, hardirq */
struct handled_notes {
	u64 sk[HANDLED_SLOTS];
	u64 what[HANDLED_SLOTS];
	u32 next;
	u32 _pad0;
};
BPF_PERCPU_ARRAY(backup_notes, struct handled_notes, 2);

/* (BCC refuses a map call written inside a macro: the lookups live here.) */
static __always_inline void handled_note(u32 idx, u64 sk, u64 what)
{
	struct handled_notes *n = backup_notes.lookup(&idx);
	if (!n)
		return;
	u32 i = n->next & (HANDLED_SLOTS - 1); /* a power of two: the verifier sees the bound */
	n->next = i + 1;
	n->sk[i] = sk;
	n->what[i] = what;
}

/* 1 when the main program noted this event (the note is taken), else 0. */
static __always_inline int handled_take(u32 idx, u64 sk, u64 what)
{
	struct handled_notes *n = backup_notes.lookup(&idx);
	if (!n)
		return 1; /* cannot tell: never handle an event twice */
#pragma unroll
	for (int i = 0; i < HANDLED_SLOTS; i++) {
		if (n->sk[i] == sk && n->what[i] == what) {
			n->sk[i] = 0;
			return 1;
		}
	}
	return 0;
}

/* `what` tells two events of one socket apart (old and new state): an
 * expression over ctx. */
#define RAW_TRACEPOINT_WITH_BACKUP(tp, handle, what)                       \
	RAW_TRACEPOINT_PROBE(tp)                                           \
	{                                                                  \
		handle(ctx);                                               \
		handled_note(BUSY_##tp, ctx->args[0], (what));             \
		return 0;                                                  \
	}                                                                  \
	int backup__##tp(struct bpf_raw_tracepoint_args *ctx)              \
	{                                                                  \
		if (!handled_take(BUSY_##tp, ctx->args[0], (what)))        \
			handle(ctx);                                       \
		return 0;                                                  \
	}
