/* reset.c: RSTs sent and received by tracked sockets.
 *
 * A reset sent for a packet with no socket (a refused SYN: reason
 * NO_SOCKET) has skaddr NULL and belongs to no connection here; the
 * refused client sees it as tcp_receive_reset on its own socket.
 */

static __always_inline void count_reset(u64 sk, int sent)
{
	if (!sk)
		return;
	struct conn_record *st = socks.lookup(&sk);
	if (!st)
		return;
	if (sent)
		__sync_fetch_and_add(&st->resets_sent, 1);
	else
		__sync_fetch_and_add(&st->resets_received, 1);
}

#if HAVE_RESET_SENT == HOOK_RAW_TP
RAW_TRACEPOINT_PROBE(tcp_send_reset)
{
	/* TP_PROTO(const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason) */
	count_reset(ctx->args[0], 1);
	return 0;
}
#elif HAVE_RESET_SENT
/* 6.1 headers predate enum sk_rst_reason, which the 6.10+ tracepoint
 * record names; only its size matters to the generated record struct. */
enum sk_rst_reason { SK_RST_REASON_NOT_SPECIFIED };

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
	count_reset((u64)args->skaddr, 1);
	return 0;
}
#endif /* HAVE_RESET_SENT */

#if HAVE_RESET_RECEIVED == HOOK_RAW_TP
RAW_TRACEPOINT_PROBE(tcp_receive_reset)
{
	/* TP_PROTO(struct sock *sk) */
	count_reset(ctx->args[0], 0);
	return 0;
}
#elif HAVE_RESET_RECEIVED
TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
	count_reset((u64)args->skaddr, 0);
	return 0;
}
#endif /* HAVE_RESET_RECEIVED */
