/* errors.c: how a socket's life ends.
 *
 * sock:inet_sk_error_report carries the errno but no socket address, so it
 * is matched to the closed socket by its tuple. It also fires with error 0
 * from tcp_disconnect(): those are ignored. tcp:tcp_destroy_sock is the
 * last event of every full TCP socket: what is still pending then ended
 * without an errno.
 */

TRACEPOINT_PROBE(sock, inet_sk_error_report)
{
	if (args->protocol != IPPROTO_TCP || args->error == 0)
		return 0;
	struct tuple_key k;
	TUPLE_FROM_ARGS(k, args);
	u64 *skp = closing.lookup(&k);
	if (skp) {
		u64 sk = *skp;
		struct conn_record *st = socks.lookup(&sk);
		if (st) {
			st->err = args->error;
			resolve(args, st);
			return 0;
		}
		closing.delete(&k);
	}
	s32 err = args->error;
	early_err.update(&k, &err);
	return 0;
}

TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
	u64 sk = (u64)args->skaddr;
	struct conn_record *st = socks.lookup(&sk);
	if (st) {
		/* Only a CLOSE socket is destroyed: when its transition was not
		 * seen (the kernel skipped that run), the end is known but not
		 * how it went (TIME_WAIT or not). Say so. */
		if (!(st->flags & F_CLOSING))
			st->flags |= F_INCOMPLETE;
		resolve(args, st);
	}
	return 0;
}
