/* reset.c: RSTs sent and received by tracked sockets.
 *
 * A reset sent for a packet with no socket (a refused SYN: reason
 * NO_SOCKET) has skaddr NULL and belongs to no connection here; the
 * refused client sees it as tcp_receive_reset on its own socket.
 */

/* 6.1 headers predate enum sk_rst_reason, which the 6.10+ tracepoint
 * record names; only its size matters to the generated record struct. */
#if HAVE_RESET_SENT
enum sk_rst_reason { SK_RST_REASON_NOT_SPECIFIED };

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
	u64 sk = (u64)args->skaddr;
	if (!sk)
		return 0;
	struct conn_record *st = socks.lookup(&sk);
	if (st)
		__sync_fetch_and_add(&st->resets_sent, 1);
	return 0;
}
#endif /* HAVE_RESET_SENT */

#if HAVE_RESET_RECEIVED
TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
	u64 sk = (u64)args->skaddr;
	struct conn_record *st = socks.lookup(&sk);
	if (st)
		__sync_fetch_and_add(&st->resets_received, 1);
	return 0;
}
#endif /* HAVE_RESET_RECEIVED */
