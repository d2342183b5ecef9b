/* errors.c: how a socket's life ends.
 *
 * sock:inet_sk_error_report carries the errno but no socket address, so it
 * is matched to the closed socket by its tuple. It also fires with error 0
 * from tcp_disconnect(): those are ignored. tcp:tcp_destroy_sock is the
 * last event of every full TCP socket: what is still pending then ended
 * without an errno.
 */

static __always_inline int error_report(void *ctx, struct sk_fields *args)
{
	if (args->error == 0)
		return 0;
	struct tuple_key k;
	TUPLE_FROM_ARGS(k, args);
	u64 *skp = closing.lookup(&k);
	if (skp) {
		u64 sk = *skp;
		struct conn_record *st = socks.lookup(&sk);
		if (st) {
			st->err = args->error;
			resolve(ctx, st);
			return 0;
		}
		closing.delete(&k);
	}
	s32 err = args->error;
	early_err.update(&k, &err);
	return 0;
}

#if HAVE_ERROR_REPORT == HOOK_RAW_TP
RAW_TRACEPOINT_PROBE(inet_sk_error_report)
{
	/* TP_PROTO(const struct sock *sk) */
	u64 sk = ctx->args[0];
	if (sk_protocol(sk) != IPPROTO_TCP)
		return 0;
	struct sk_fields f = {};
	SK_READ(f.error, sk, OFF_SK_ERR);
	if (f.error == 0)
		return 0;
	sk_fields_read(&f, sk);
	return error_report(ctx, &f);
}
#elif HAVE_ERROR_REPORT
TRACEPOINT_PROBE(sock, inet_sk_error_report)
{
	if (args->protocol != IPPROTO_TCP || args->error == 0)
		return 0;
	struct sk_fields f = {};
	SK_FIELDS_FROM_RECORD(f, args);
	f.error = args->error;
	return error_report(args, &f);
}
#endif

/* The errno an error report left by tuple because it found no closing
 * socket (see error_report above). */
static __always_inline void adopt_early_err(struct conn_record *st)
{
	struct tuple_key k;
	tuple_from_state(&k, st);
	s32 *early = early_err.lookup(&k);
	if (early) {
		st->err = *early;
		early_err.delete(&k);
	}
}

/* Only a CLOSE socket is destroyed: when its state lacks F_CLOSING, the
 * kernel skipped that transition's run. The end is known but not how it
 * went (TIME_WAIT or not): say so. What is still knowable is recovered:
 * the addresses (a connect's state has no source port before its next
 * transition) and the errno. `a` is a tracepoint record or sk_fields. */
#define DESTROY_UNSEEN(st, a)                                              \
	do {                                                               \
		(st)->flags |= F_INCOMPLETE;                               \
		STORE_ADDRS(st, a);                                        \
		adopt_early_err(st);                                       \
	} while (0)

#if HAVE_DESTROY == HOOK_RAW_TP
static __always_inline void destroy_raw(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(struct sock *sk) */
	u64 sk = ctx->args[0];
	struct conn_record *st = socks.lookup(&sk);
	if (!st)
		return;
	if (!(st->flags & F_CLOSING)) {
		struct sk_fields f = {};
		sk_fields_read(&f, sk);
		DESTROY_UNSEEN(st, &f);
	}
	resolve(ctx, st);
}

/* a socket is freed in a task (close()) or in a softirq (the TIME_WAIT
 * timer, a reset) during a close()'s run on the same CPU: the bench
 * measured this as the one loss left at saturation */
RAW_TRACEPOINT_WITH_BACKUP(tcp_destroy_sock, destroy_raw, 0)
#elif HAVE_DESTROY
TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
	u64 sk = (u64)args->skaddr;
	struct conn_record *st = socks.lookup(&sk);
	if (!st)
		return 0;
	if (!(st->flags & F_CLOSING))
		DESTROY_UNSEEN(st, args);
	resolve(args, st);
	return 0;
}
#endif
