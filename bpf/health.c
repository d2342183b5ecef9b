/* health.c: what an established connection's socket says when it closes:
 * payload bytes each way, RTT, MSS and the keepalive and Nagle options.
 *
 * Every offset, bit and flag number comes from the running kernel's BTF
 * (agent/kernel/sock_fields.py HEALTH), one -D each: a field this kernel's
 * BTF lacks is not read, and user space reports it null and says why. The
 * Debian headers BCC compiles against lay tcp_sock out differently.
 */

#if HAVE_SOCK_HEALTH
/* Nagle off: tcp.h's TCP_NAGLE_OFF, the bit TCP_NODELAY sets in
 * tcp_sock.nonagle (unchanged since 2.6; a #define, so not in BTF). */
#define NAGLE_OFF_BIT 1

static __always_inline void health_read(struct conn_record *st, u64 sk, int old)
{
	st->health = H_READ;
#if defined(OFF_SK_FLAGS)
	unsigned long sk_flags = 0;
	SK_READ(sk_flags, sk, OFF_SK_FLAGS);
#endif
#if defined(OFF_TP_BYTES_ACKED) && defined(OFF_TP_SND_UNA) && defined(OFF_TP_WRITE_SEQ)
	/* bytes_acked counts every sequence number the peer acknowledged: an
	 * outbound connection's SYN (a passive child starts past its SYN-ACK)
	 * and our FIN once acknowledged. The FIN was queued when the socket
	 * left through a state only our FIN leads to, and it is acknowledged
	 * when nothing is left unacknowledged (write_seq counts the FIN). */
	u64 acked = 0;
	u32 una = 0, write_seq = 0;
	SK_READ(acked, sk, OFF_TP_BYTES_ACKED);
	if (st->direction == DIR_OUTBOUND && acked)
		acked--;
	if (old == ST_FIN_WAIT1 || old == ST_FIN_WAIT2 || old == ST_CLOSING || old == ST_LAST_ACK) {
		SK_READ(una, sk, OFF_TP_SND_UNA);
		SK_READ(write_seq, sk, OFF_TP_WRITE_SEQ);
		if (una == write_seq && acked)
			acked--;
	}
	st->bytes_sent = acked;
#endif
#if defined(OFF_TP_BYTES_RECEIVED) && defined(OFF_SK_FLAGS) && defined(SK_FLAG_DONE)
	/* bytes_received counts the peer's FIN; tcp_fin() sets SOCK_DONE
	 * after counting it, and nothing else of TCP sets it. */
	u64 received = 0;
	SK_READ(received, sk, OFF_TP_BYTES_RECEIVED);
	if ((sk_flags >> SK_FLAG_DONE) & 1 && received)
		received--;
	st->bytes_received = received;
#endif
#if defined(OFF_TP_SRTT_US)
	u32 srtt = 0;
	SK_READ(srtt, sk, OFF_TP_SRTT_US);
	st->srtt_us = srtt >> 3; /* kept << 3, as tcp_get_info() reports it */
#endif
#if defined(OFF_TP_RTT_MIN)
	SK_READ(st->min_rtt_us, sk, OFF_TP_RTT_MIN);
#endif
#if defined(OFF_TP_MSS_CACHE)
	u32 mss = 0;
	SK_READ(mss, sk, OFF_TP_MSS_CACHE);
	st->mss = mss;
#endif
#if defined(OFF_TP_KEEPALIVE_TIME)
	SK_READ(st->keepalive_idle, sk, OFF_TP_KEEPALIVE_TIME);
#endif
#if defined(OFF_SK_FLAGS) && defined(SK_FLAG_KEEPOPEN)
	if ((sk_flags >> SK_FLAG_KEEPOPEN) & 1)
		st->health |= H_KEEPALIVE;
#endif
#if defined(OFF_TP_NONAGLE) && defined(NONAGLE_SHIFT)
	u8 nonagle = 0;
	SK_READ(nonagle, sk, OFF_TP_NONAGLE);
	if ((nonagle >> NONAGLE_SHIFT) & NAGLE_OFF_BIT)
		st->health |= H_NODELAY;
#endif
}
#endif /* HAVE_SOCK_HEALTH */
