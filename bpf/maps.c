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
/* socket(2) calls in flight (tid -> is_tcp), and fds known to be TCP
 * sockets ((tgid << 32) | fd -> 1), for failures that never reach TCP. */
BPF_TABLE("lru_hash", u32, u8, socket_calls, MAX_CALLS);
BPF_TABLE("lru_hash", u64, u8, tcp_fds, MAX_SOCKS);
/* Sockets closed and waiting for their errno (tuple -> skaddr), and errnos
 * reported before their socket reached CLOSE (tuple -> errno). */
BPF_TABLE("lru_hash", struct tuple_key, u64, closing, MAX_CALLS);
BPF_TABLE("lru_hash", struct tuple_key, s32, early_err, MAX_CALLS);
/* SYN-ACK retransmits of handshakes whose child socket does not exist yet. */
BPF_TABLE("lru_hash", struct tuple_key, u32, synacks, MAX_CALLS);
/* Never written: the zeroed template new states are copied from. */
BPF_ARRAY(zero_record, struct conn_record, 1);
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
/* Per-process counts are kept only when something aggregates them
 * (trace --summary, top): plain tracing pays no map update per record. */
#ifndef PROC_COUNTS
#define PROC_COUNTS 0
#endif
#ifndef MAX_PROC_COUNTS
#define MAX_PROC_COUNTS 65536
#endif
/* Per-CPU: a client and its server on two CPUs would otherwise bounce one
 * cache line per count between them (measured: ~2 us per connection more
 * than without counts); user space sums the CPUs. */
BPF_PERCPU_HASH(proc_counts, struct proc_count_key, u64, MAX_PROC_COUNTS);

#if USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
/* Pids whose first record woke the reader (see emit). A pid reused while
 * its old entry is still here waits for the reader's tick like any other. */
BPF_TABLE("lru_hash", u32, u8, woken_pids, 8192);
#else
BPF_PERF_OUTPUT(events);
#endif

static __always_inline void count(u32 idx)
{
	u64 *c = counters.lookup(&idx);
	if (c) /* per-CPU, but a raw tracepoint program can interrupt another here */
		__sync_fetch_and_add(c, 1);
}

static __always_inline void proc_count(u32 pid, u8 kind, u16 err)
{
	struct proc_count_key k = {.pid = pid, .err = err, .kind = kind};
	u64 one = 1;
	u64 *n = proc_counts.lookup(&k);
	if (n) {
		__sync_fetch_and_add(n, 1); /* this CPU's slot; atomic against nesting */
		return;
	}
	/* NOEXIST: when two CPUs create the key at once, the loser adds to
	 * the winner's element instead of overwriting it */
	if (proc_counts.insert(&k, &one) == 0)
		return;
	n = proc_counts.lookup(&k);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		count(CNT_PROC_COUNTS);
}

/* Counted before the buffer is tried: a record the buffer drops still counts. */
static __always_inline void count_record(struct conn_record *rec, u8 type)
{
	if (type == EV_CONNECT) {
		if (rec->err || (rec->flags & F_ABORTED))
			proc_count(rec->pid, PC_CONNECT_FAILED, (u16)rec->err);
		else
			proc_count(rec->pid, PC_CONNECT_OK, 0);
	} else if (type == EV_ACCEPT) {
		proc_count(rec->pid, PC_ACCEPT, 0);
	} else {
		proc_count(rec->pid, PC_CLOSE, 0);
		if ((rec->flags & F_TIME_WAIT) && !rec->err)
			proc_count(rec->pid, PC_ACTIVE_CLOSE, 0);
	}
}

static __always_inline void emit(void *ctx, struct conn_record *rec, u8 type)
{
#if PROC_COUNTS
	count_record(rec, type);
#endif
	rec->type = type;
	rec->ts_ns = bpf_ktime_get_ns();
#if USE_RINGBUF
	/* No wake-up per record: the kernel's default wakes the reader for
	 * every record it finds caught up, an irq_work and a context switch
	 * each, measured as the reader's largest cost at 10k connections/s.
	 * The reader consumes on a short tick instead (LoadOptions.ring_tick_ms
	 * in agent/kernel/loader.py); the ring holds far more than one tick of
	 * the heaviest churn. Except a process's first record: it wakes the reader at once,
	 * so that user space reads the command line and unit of a short-lived
	 * process while it still exists. BPF_RB_NO_WAKEUP = 1,
	 * BPF_RB_FORCE_WAKEUP = 2 (uapi/linux/bpf.h). */
	u64 wake = 1;
	u8 yes = 1;
	/* a lookup first: an LRU insert takes (and may evict) a free node
	 * even when the key exists, on every record */
	if (rec->pid && !woken_pids.lookup(&rec->pid)) {
		woken_pids.update(&rec->pid, &yes);
		wake = 2;
	}
	int rc = events.ringbuf_output(rec, sizeof(*rec), wake);
#else
	int rc = events.perf_submit(ctx, rec, sizeof(*rec));
#endif
	count(rc == 0 ? CNT_EMITTED : CNT_LOST_RINGBUF);
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

/* Reads from the tracepoint record go through bpf_probe_read_kernel: the
 * verifier refuses loads from a ctx pointer the compiler has offset.
 * Tracepoint records lay out addresses alike but are distinct types, so
 * these are macros. Zero ports are skipped: CLOSE->SYN_SENT and a failed
 * port allocation report sport 0, and a later event has the real one. */
#define STORE_ADDRS(st, a)                                                 \
	do {                                                               \
		(st)->family = (a)->family;                                \
		if ((a)->sport)                                            \
			(st)->sport = (a)->sport;                          \
		if ((a)->dport)                                            \
			(st)->dport = (a)->dport;                          \
		if ((a)->family == AF_INET) {                              \
			bpf_probe_read_kernel((st)->saddr, 4, (a)->saddr);      \
			bpf_probe_read_kernel((st)->daddr, 4, (a)->daddr);      \
		} else {                                                   \
			bpf_probe_read_kernel((st)->saddr, 16, (a)->saddr_v6);  \
			bpf_probe_read_kernel((st)->daddr, 16, (a)->daddr_v6);  \
		}                                                          \
	} while (0)

#define TUPLE_FROM_ARGS(k, a)                                              \
	do {                                                               \
		__builtin_memset(&(k), 0, sizeof(k));                      \
		(k).sport = (a)->sport;                                    \
		(k).dport = (a)->dport;                                    \
		(k).family = (a)->family;                                  \
		if ((a)->family == AF_INET)                                \
			bpf_probe_read_kernel((k).daddr, 4, (a)->daddr);        \
		else                                                       \
			bpf_probe_read_kernel((k).daddr, 16, (a)->daddr_v6);    \
	} while (0)

/* The socket fields of a sock: tracepoint record, as the programs behind
 * both methods see them: the tracepoint copies its record here, the raw
 * tracepoint reads the socket the same way TP_fast_assign does. */
struct sk_fields {
	u64 skaddr;
	int oldstate;
	int newstate;
	int error;
	u16 sport;
	u16 dport;
	u16 family;
	u16 protocol;
	u8 saddr[4];
	u8 daddr[4];
	u8 saddr_v6[16];
	u8 daddr_v6[16];
};

/* (inet_sk_error_report's record has no skaddr) */
#define SK_FIELDS_FROM_RECORD(f, a)                                        \
	do {                                                               \
		(f).sport = (a)->sport;                                    \
		(f).dport = (a)->dport;                                    \
		(f).family = (a)->family;                                  \
		(f).protocol = (a)->protocol;                              \
		bpf_probe_read_kernel((f).saddr, 4, (a)->saddr);           \
		bpf_probe_read_kernel((f).daddr, 4, (a)->daddr);           \
		bpf_probe_read_kernel((f).saddr_v6, 16, (a)->saddr_v6);    \
		bpf_probe_read_kernel((f).daddr_v6, 16, (a)->daddr_v6);    \
	} while (0)

/* A raw tracepoint program with a backup (agent/kernel/hooks.py, backup=True).
 * The kernel skips a raw tracepoint program while that same program runs on
 * the CPU, so an event in a softirq that interrupts the main program (running
 * for a task's connect() or close()) would be lost. The backup is another
 * program on the same tracepoint, which the loader attaches after the main
 * one: it finds the main one busy below it and handles the event; otherwise
 * the main one has handled it and the backup returns. `handle` takes the
 * raw tracepoint's ctx.
 *
 * backup_busy[BUSY_<tp>] is 1, per CPU, while the main program runs. One
 * array indexed by tracepoint, because BCC refuses a map call written inside
 * a macro: the lookup lives in busy_flag(). */
#define BUSY_inet_sock_set_state 0
#define BUSY_tcp_destroy_sock 1
BPF_PERCPU_ARRAY(backup_busy, u32, 2);

static __always_inline u32 *busy_flag(u32 idx)
{
	return backup_busy.lookup(&idx);
}

#define RAW_TRACEPOINT_WITH_BACKUP(tp, handle)                             \
	RAW_TRACEPOINT_PROBE(tp)                                           \
	{                                                                  \
		u32 *busy = busy_flag(BUSY_##tp);                          \
		if (!busy)                                                 \
			return 0;                                          \
		*busy = 1;                                                 \
		handle(ctx);                                               \
		*busy = 0;                                                 \
		return 0;                                                  \
	}                                                                  \
	int backup__##tp(struct bpf_raw_tracepoint_args *ctx)              \
	{                                                                  \
		u32 *busy = busy_flag(BUSY_##tp);                          \
		if (busy && *busy)                                         \
			handle(ctx);                                       \
		return 0;                                                  \
	}

/* Offsets come from the running kernel's BTF (agent/kernel/sock_fields.py),
 * never from the headers BCC compiles against. */
#ifdef OFF_SK_PROTOCOL
#define SK_READ(dst, sk, off) bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)((sk) + (off)))

static __always_inline u16 sk_protocol(u64 sk)
{
	u16 v = 0;
	SK_READ(v, sk, OFF_SK_PROTOCOL);
	return v;
}

static __always_inline void sk_fields_read(struct sk_fields *f, u64 sk)
{
	u16 port = 0;
	f->skaddr = sk;
	f->protocol = sk_protocol(sk);
	SK_READ(f->family, sk, OFF_SK_FAMILY);
	SK_READ(port, sk, OFF_INET_SPORT);
	f->sport = __builtin_bswap16(port);
	port = 0;
	SK_READ(port, sk, OFF_SK_DPORT);
	f->dport = __builtin_bswap16(port);
	SK_READ(f->saddr, sk, OFF_INET_SADDR);
	SK_READ(f->daddr, sk, OFF_SK_DADDR);
	if (f->family == AF_INET6) {
		SK_READ(f->saddr_v6, sk, OFF_SK_V6_RCV_SADDR);
		SK_READ(f->daddr_v6, sk, OFF_SK_V6_DADDR);
	}
}
#endif /* OFF_SK_PROTOCOL */

static __always_inline void tuple_from_state(struct tuple_key *k, struct conn_record *st)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->daddr, st->daddr, 16);
	k->sport = st->sport;
	k->dport = st->dport;
	k->family = st->family;
}

/* Emits the last record of a socket and forgets it. A socket that never
 * established is a failed (or aborted) connect attempt; otherwise a close. */
static __always_inline void resolve(void *ctx, struct conn_record *st)
{
	u64 sk = st->skaddr;
	struct tuple_key k = {};
	tuple_from_state(&k, st);
	closing.delete(&k);
	if (!st->end_ns)
		st->end_ns = bpf_ktime_get_ns();
	if (st->err)
		st->flags &= ~F_TIME_WAIT;
	if (st->closed_by == CLOSED_BY_NONE && (st->flags & F_ESTABLISHED))
		st->closed_by = (st->resets_received || st->resets_sent) ? CLOSED_BY_RESET
									  : CLOSED_BY_LOCAL;
	if (!(st->flags & F_ESTABLISHED) && st->direction == DIR_OUTBOUND) {
		if (!st->err)
			st->flags |= F_ABORTED;
		emit(ctx, st, EV_CONNECT);
	} else {
		emit(ctx, st, EV_CLOSE);
	}
	socks.delete(&sk);
}

/* Creates the state of a socket from the zeroed template. A state already
 * at this address belongs to a socket whose end was never seen: the kernel
 * skips a tracepoint program that fires while another BPF program runs on
 * the same CPU (the bpf_prog_active guard; counted per program as
 * recursion_misses), and a skipped tcp_destroy_sock leaves its state
 * behind. Emit it, flagged, rather than overwrite it. */
static __always_inline struct conn_record *state_new(void *ctx, u64 sk)
{
	struct conn_record *stale = socks.lookup(&sk);
	if (stale) {
		stale->flags |= F_INCOMPLETE;
		resolve(ctx, stale);
	}
	u32 zero = 0;
	struct conn_record *tmpl = zero_record.lookup(&zero);
	if (!tmpl)
		return 0;
	if (socks.update(&sk, tmpl) != 0) {
		count(CNT_LOST_STATE_MAP);
		return 0;
	}
	struct conn_record *st = socks.lookup(&sk);
	if (st)
		st->skaddr = sk;
	return st;
}
