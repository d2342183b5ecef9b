/* nagle.c: small writes that Nagle's algorithm holds back.
 *
 * A write smaller than the MSS on a socket without TCP_NODELAY or TCP_CORK
 * waits while an earlier small segment is still unacknowledged (Minshall's
 * variant, tcp_nagle_check() and tcp_minshall_check() in tcp_output.c):
 * against a peer that delays its ACK, up to 40 ms per request. Each such
 * write is counted into its connection's window row (nagle_holds); nothing
 * is sent per write. Offsets come from BTF (agent/kernel/sock_fields.py);
 * the flag values are tcp.h's (TCP_NAGLE_OFF 1, TCP_NAGLE_CORK 2), which
 * BTF does not carry.
 */

#if HAVE_NAGLE && AGGREGATE
static __always_inline void nagle_check(u64 sk, u64 size)
{
	u8 nonagle = 0;
	SK_READ(nonagle, sk, OFF_TP_NONAGLE);
	if ((nonagle >> NONAGLE_SHIFT) & 3) /* TCP_NODELAY or TCP_CORK: not Nagle's to hold */
		return;
	u32 mss = 0, sml = 0, una = 0, nxt = 0;
	SK_READ(mss, sk, OFF_TP_MSS_CACHE);
	if (!size || size >= mss)
		return;
	SK_READ(sml, sk, OFF_TP_SND_SML);
	SK_READ(una, sk, OFF_TP_SND_UNA);
	SK_READ(nxt, sk, OFF_TP_SND_NXT);
	/* tcp_minshall_check: the last small segment sent is unacknowledged */
	if ((s32)(sml - una) <= 0 || (s32)(sml - nxt) > 0)
		return;
	struct conn_record *st = socks.lookup(&sk);
	if (st)
		aggregate_nagle_hold(st);
}

#if HAVE_NAGLE == HOOK_RAW_TP
/* TP_PROTO(const struct sock *sk, const struct msghdr *msg, const struct
 * sk_buff *skb, int size_goal): fires per chunk of a write; what is left of
 * the write is msg->msg_iter.count. */
RAW_TRACEPOINT_PROBE(tcp_sendmsg_locked)
{
	u64 sk = ctx->args[0], left = 0;
	bpf_probe_read_kernel(&left, sizeof(left), (void *)(ctx->args[1] + OFF_MSG_ITER_COUNT));
	nagle_check(sk, left);
	return 0;
}
#elif HAVE_NAGLE == HOOK_FENTRY
/* See state.c for why the structs are declared first. */
struct sock;
struct msghdr;
KFUNC_PROBE(tcp_sendmsg_locked, struct sock *sk, struct msghdr *msg, size_t size)
{
	nagle_check((u64)sk, size);
	return 0;
}
#elif HAVE_NAGLE == HOOK_KPROBE
#include <uapi/linux/ptrace.h>
struct sock;
struct msghdr;
int kprobe__tcp_sendmsg_locked(struct pt_regs *ctx, struct sock *sk, struct msghdr *msg, size_t size)
{
	nagle_check((u64)sk, size);
	return 0;
}
#endif
#endif /* HAVE_NAGLE && AGGREGATE */
