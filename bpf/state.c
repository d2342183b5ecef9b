/* state.c: the TCP lifecycle from sock:inet_sock_set_state.
 *
 * Records are emitted when an attempt resolves and when a connection ends,
 * not per transition. A socket reaching CLOSE is not emitted at once: its
 * errno is reported just after (tcp_done_with_error sets the state first,
 * then calls sk_error_report), so errors.c emits it, or the socket's
 * destruction does when no error follows.
 */

/* Returns the new state so that the caller stores the addresses it knows:
 * a connect whose later transitions the kernel skipped still says where it
 * went (without them its record had no family at all). */
static __always_inline struct conn_record *connect_start(void *ctx, u64 sk)
{
	struct conn_record *st = socks.lookup(&sk);
	if (st && (st->flags & F_CLOSING))
		resolve(ctx, st); /* the socket is connecting again */
	st = state_new(ctx, sk);
	if (!st)
		return 0;
	owner_from_current(st, PID_SRC_CONNECT);
	st->direction = DIR_OUTBOUND;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct connect_call *call = calls.lookup(&tid);
	if (call) {
		st->start_ns = call->start_ns;
		call->skaddr = sk;
	} else {
		st->start_ns = bpf_ktime_get_ns(); /* in-kernel or io_uring connect */
	}
	return st;
}

#if CONNECT_HOOK == HOOK_FENTRY || CONNECT_HOOK == HOOK_KPROBE
/* tcp_connect() runs after the source port is bound: every address is set. */
static __always_inline void connect_start_sk(void *ctx, u64 sk)
{
	struct conn_record *st = connect_start(ctx, sk);
#ifdef OFF_SK_PROTOCOL
	if (st) {
		struct sk_fields f = {};
		sk_fields_read(&f, sk);
		STORE_ADDRS(st, &f);
	}
#endif
}
#endif

#if CONNECT_HOOK == HOOK_FENTRY
/* KFUNC_PROBE declares its function with the argument types as written: a
 * struct first seen inside that parameter list gets prototype scope, and
 * BCC's second declaration then conflicts with the first (Debian 6.1 and
 * 6.12: "conflicting types for '____kfunc__tcp_connect'"). Declared here at
 * file scope, never defined: only the pointer is passed on. */
struct sock;
KFUNC_PROBE(tcp_connect, struct sock *sk)
{
	connect_start_sk(ctx, (u64)sk);
	return 0;
}
#elif CONNECT_HOOK == HOOK_KPROBE
/* BCC rewrites `sk` into a read of ctx's first argument register, which
 * needs the complete struct pt_regs: the architecture's register frame
 * (a stable ABI, unlike the socket structs), not a kernel struct layout. */
#include <uapi/linux/ptrace.h>
struct sock;
int kprobe__tcp_connect(struct pt_regs *ctx, struct sock *sk)
{
	connect_start_sk(ctx, (u64)sk);
	return 0;
}
#endif

static __always_inline void inbound_start(struct conn_record *st, struct listener_key *lk)
{
	struct listener_owner *o = listener_find(lk);
	st->direction = DIR_INBOUND;
	if (o) {
		st->pid = o->pid;
		st->cgroup_id = o->cgroup_id;
		__builtin_memcpy(st->comm, o->comm, sizeof(st->comm));
		st->pid_source = PID_SRC_LISTENER;
	}
}

/* The socket's fields, read only on the transitions that need them: the
 * raw tracepoint reads them from the socket (a probe read each, the bulk
 * of a run's cost), so most transitions of a tracked socket read none. The
 * tracepoint's record already holds them (family set: nothing to do). */
static __always_inline void need_fields(struct sk_fields *f)
{
#ifdef OFF_SK_PROTOCOL
	if (!f->family)
		sk_fields_read(f, f->skaddr);
#endif
}

static __always_inline int set_state(void *ctx, struct sk_fields *args)
{
	u64 sk = args->skaddr;
	int old = args->oldstate, new = args->newstate;

	/* Between the closing states nothing is decided: who closed first is
	 * known at FIN_WAIT1/CLOSE_WAIT, the end at CLOSE (2 of a connection's
	 * 10 runs). */
	if (new == ST_FIN_WAIT2 || new == ST_LAST_ACK || new == ST_CLOSING)
		return 0;

	struct listener_key lk;
	if (new == ST_LISTEN || (old == ST_LISTEN && new == ST_CLOSE)) {
		need_fields(args);
		if (args->protocol != IPPROTO_TCP)
			return 0;
		listener_key_from(&lk, args->family, args->saddr, args->saddr_v6, args->sport);
		if (new == ST_LISTEN)
			listener_add(&lk);
		else
			listeners.delete(&lk);
		return 0;
	}
	if (old == ST_CLOSE && new == ST_SYN_SENT) {
#if CONNECT_HOOK == HOOK_TRACEPOINT
		/* tcp_v4/v6_connect set SYN_SENT before inet_hash_connect()
		 * picks the source port: sport is still 0 here and is stored
		 * by the next transition. */
		need_fields(args);
		if (args->protocol != IPPROTO_TCP)
			return 0;
		struct conn_record *cs = connect_start(ctx, sk);
		if (cs)
			STORE_ADDRS(cs, args);
#endif
		return 0;
	}

	struct conn_record *st;
	if (old == ST_LISTEN && new == ST_SYN_RECV) {
		/* the child socket, cloned from the listener */
		need_fields(args);
		if (args->protocol != IPPROTO_TCP)
			return 0;
		st = state_new(ctx, sk);
		if (!st)
			return 0;
		st->start_ns = bpf_ktime_get_ns();
		STORE_ADDRS(st, args);
		listener_key_from(&lk, args->family, args->saddr, args->saddr_v6, args->sport);
		inbound_start(st, &lk);
		return 0;
	}

	st = socks.lookup(&sk);
	if (!st) {
		/* not tracked: a socket of another protocol, or one whose start
		 * was skipped or predates connscope (below) */
		if (old != ST_ESTABLISHED && new != ST_ESTABLISHED)
			return 0;
		need_fields(args);
		if (args->protocol != IPPROTO_TCP)
			return 0;
		listener_key_from(&lk, args->family, args->saddr, args->saddr_v6, args->sport);
	}
	if (!st && new == ST_ESTABLISHED && (old == ST_SYN_SENT || old == ST_SYN_RECV)) {
		/* The start of this connection was skipped (see state_new):
		 * report it from here, flagged, without a start time. An
		 * outbound owner cannot be known in this (softirq) context. */
		st = state_new(ctx, sk);
		if (!st)
			return 0;
		st->flags = F_INCOMPLETE;
		STORE_ADDRS(st, args);
		if (old == ST_SYN_RECV)
			inbound_start(st, &lk);
		else
			st->direction = DIR_OUTBOUND;
	} else if (!st) {
		if (old != ST_ESTABLISHED)
			return 0;
		/* A connection that predates connscope (or whose state the LRU
		 * evicted): track its end, flagged, with what is knowable. */
		st = state_new(ctx, sk);
		if (!st)
			return 0;
		st->flags = F_PREEXISTING | F_ESTABLISHED;
		STORE_ADDRS(st, args);
		inbound_start(st, &lk);
		if (st->pid_source == PID_SRC_UNKNOWN)
			st->direction = DIR_OUTBOUND;
		/* FIN_WAIT1 fires in the task calling close() */
		if (new == ST_FIN_WAIT1 && st->pid_source == PID_SRC_UNKNOWN)
			owner_from_current(st, PID_SRC_CLOSE);
	} else if (old == ST_ESTABLISHED && !(st->flags & F_ESTABLISHED)) {
		/* The transition to ESTABLISHED was skipped: its record is
		 * emitted late, flagged, with no handshake time. */
		need_fields(args);
		st->flags |= F_ESTABLISHED | F_INCOMPLETE;
		STORE_ADDRS(st, args);
		emit(ctx, st, st->direction == DIR_INBOUND ? EV_ACCEPT : EV_CONNECT);
	}

	/* Addresses not all known at the start are read here, once:
	 * - a connect's source port is bound after its SYN_SENT run (tracepoint
	 *   method): the raw tracepoint reads that one field;
	 * - a child socket's peer address and port are set after its
	 *   LISTEN->SYN_RECV run on Debian's 6.1 and 6.12 (inet_csk_clone_lock
	 *   sets the state before the ports, tcp_v4_syn_recv_sock the address
	 *   after it; 6.18 has them first), so its next transition reads them.
	 * A socket whose start stored everything reads nothing more. */
	if (!st->sport || !st->dport) {
#ifdef OFF_SK_PROTOCOL
		if (!args->family && st->family && st->dport) {
			u16 port = 0;
			SK_READ(port, sk, OFF_INET_SPORT);
			st->sport = __builtin_bswap16(port);
		} else
#endif
		{
			need_fields(args);
			STORE_ADDRS(st, args);
		}
	}
	switch (new) {
	case ST_ESTABLISHED: {
		st->established_ns = bpf_ktime_get_ns();
		st->flags |= F_ESTABLISHED;
		if (old == ST_SYN_SENT) {
			emit(ctx, st, EV_CONNECT);
		} else if (old == ST_SYN_RECV) {
			struct tuple_key k;
			tuple_from_state(&k, st);
			u32 *n = synacks.lookup(&k);
			if (n) {
				st->synack_retransmits = *n;
				synacks.delete(&k);
			}
			emit(ctx, st, EV_ACCEPT);
		}
		return 0;
	}
	case ST_FIN_WAIT1:
		if (st->closed_by == CLOSED_BY_NONE)
			st->closed_by = CLOSED_BY_LOCAL;
		return 0;
	case ST_CLOSE_WAIT:
		if (st->closed_by == CLOSED_BY_NONE)
			st->closed_by = CLOSED_BY_PEER;
		return 0;
	case ST_CLOSE:
		break;
	default:
		return 0;
	}

	/* -> CLOSE */
	st->end_ns = bpf_ktime_get_ns();
	st->flags |= F_CLOSING;
#if HAVE_SOCK_HEALTH
	/* the socket's last word: nothing is sent or received after CLOSE */
	if (st->flags & F_ESTABLISHED)
		health_read(st, sk, old);
#endif
	/* closed_by stays NONE here when no FIN came first: resolve() decides
	 * it, because an abortive close (SO_LINGER 0, tcp_disconnect) moves to
	 * CLOSE before it sends its RST. */
	if (old == ST_FIN_WAIT1 || old == ST_FIN_WAIT2 || old == ST_CLOSING) {
		/* Only our FIN leads to these states: they say who closed
		 * first even when the kernel skipped the FIN_WAIT1 run. */
		if (st->closed_by == CLOSED_BY_NONE)
			st->closed_by = CLOSED_BY_LOCAL;
		if (st->closed_by == CLOSED_BY_LOCAL)
			st->flags |= F_TIME_WAIT;
	}

#if HAVE_LIFECYCLE == HOOK_RAW_TP
	/* Every error report of a TCP socket sets sk_err before it runs:
	 * tcp_done_with_error() (a reset) sets it, then moves to CLOSE, then
	 * reports; a timeout, tcp_abort() and a fatal ICMP report first and
	 * then move to CLOSE, all under the socket's lock. With sk_err 0 here
	 * no error came and none will: the socket's destruction resolves it,
	 * and the tuple maps are not touched (about 0.3 us per socket). The
	 * perf-event tracepoint's record has no sk_err. */
	int sk_err = 0;
	SK_READ(sk_err, sk, OFF_SK_ERR);
	if (!sk_err)
		return 0;
#endif
	struct tuple_key k;
	tuple_from_state(&k, st);
	s32 *early = early_err.lookup(&k);
	if (early) {
		/* tcp_abort() reports the error before moving to CLOSE */
		st->err = *early;
		early_err.delete(&k);
		resolve(ctx, st);
		return 0;
	}
	st->flags |= F_AWAIT_ERR;
	closing.update(&k, &sk);
	return 0;
}

#if HAVE_LIFECYCLE == HOOK_RAW_TP
static __always_inline void set_state_raw(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(const struct sock *sk, const int oldstate, const int newstate).
	 * Fields are read on demand (need_fields): family 0 says not yet. */
	struct sk_fields f = {};
	f.skaddr = ctx->args[0];
	f.oldstate = (int)ctx->args[1];
	f.newstate = (int)ctx->args[2];
	set_state(ctx, &f);
}

/* the busiest program, running both in tasks and in softirqs */
RAW_TRACEPOINT_WITH_BACKUP(inet_sock_set_state, set_state_raw, (ctx->args[1] << 8) | ctx->args[2])
#elif HAVE_LIFECYCLE
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != IPPROTO_TCP)
		return 0;
	if (args->newstate == ST_FIN_WAIT2 || args->newstate == ST_LAST_ACK || args->newstate == ST_CLOSING)
		return 0; /* as set_state(), before the copy */
	struct sk_fields f = {};
	SK_FIELDS_FROM_RECORD(f, args);
	f.skaddr = (u64)args->skaddr;
	f.oldstate = args->oldstate;
	f.newstate = args->newstate;
	return set_state(args, &f);
}
#endif
