/* retransmit.c: SYN, data and SYN-ACK retransmits.
 *
 * One tcp_retransmit_skb event can cover a TSO skb of many segments: the
 * counts are retransmit events, not segments. SYN-ACKs are retransmitted
 * for a request socket, before the child socket exists, so they are kept
 * by tuple until the child reaches ESTABLISHED (state.c).
 */

static __always_inline void retransmit(u64 sk, int state)
{
	struct conn_record *st = socks.lookup(&sk);
	if (!st)
		return;
	if (state == ST_SYN_SENT)
		__sync_fetch_and_add(&st->syn_retransmits, 1);
	else
		__sync_fetch_and_add(&st->retransmits, 1);
}

#if HAVE_RETRANSMIT == HOOK_RAW_TP
RAW_TRACEPOINT_PROBE(tcp_retransmit_skb)
{
	/* TP_PROTO(const struct sock *sk, const struct sk_buff *skb, int err) */
	u64 sk = ctx->args[0];
	u8 state = 0;
	SK_READ(state, sk, OFF_SK_STATE);
	retransmit(sk, state);
	return 0;
}
#elif HAVE_RETRANSMIT
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
	retransmit((u64)args->skaddr, args->state);
	return 0;
}
#endif /* HAVE_RETRANSMIT */

#if HAVE_SYNACK_RETRANSMIT
TRACEPOINT_PROBE(tcp, tcp_retransmit_synack)
{
	struct tuple_key k;
	TUPLE_FROM_ARGS(k, args);
	u32 one = 1;
	u32 *n = synacks.lookup(&k);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		synacks.update(&k, &one);
	return 0;
}
#endif /* HAVE_SYNACK_RETRANSMIT */
