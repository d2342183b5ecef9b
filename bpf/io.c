/* io.c: the first task that reads or writes an inbound socket owns it.
 *
 * sock:sock_send_length / sock_recv_length fire in the task doing the I/O,
 * with sk equal to inet_sock_set_state's skaddr. The listener's owner is
 * only a first guess (a pre-fork server, or systemd socket activation,
 * accepts in another process than the one that called listen()).
 */

static __always_inline void first_io(const void *skp, u16 protocol)
{
	if (protocol != IPPROTO_TCP)
		return;
	u64 sk = (u64)skp;
	struct conn_record *st = socks.lookup(&sk);
	if (!st || st->direction != DIR_INBOUND || st->pid_source == PID_SRC_FIRST_IO)
		return;
	owner_from_current(st, PID_SRC_FIRST_IO);
}

#if HAVE_FIRST_IO == HOOK_RAW_TP
/* TP_PROTO(struct sock *sk, int ret, int flags) */
RAW_TRACEPOINT_PROBE(sock_send_length)
{
	u64 sk = ctx->args[0];
	first_io((const void *)sk, sk_protocol(sk));
	return 0;
}

RAW_TRACEPOINT_PROBE(sock_recv_length)
{
	u64 sk = ctx->args[0];
	first_io((const void *)sk, sk_protocol(sk));
	return 0;
}
#elif HAVE_FIRST_IO == HOOK_TRACEPOINT
TRACEPOINT_PROBE(sock, sock_send_length)
{
	first_io(args->sk, args->protocol);
	return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
	first_io(args->sk, args->protocol);
	return 0;
}
#elif HAVE_FIRST_IO == HOOK_FENTRY
/* Kernels before the I/O tracepoints (6.3): their callers' entries. Both
 * functions are TCP's own, so the protocol needs no read. See state.c for
 * why struct sock is declared first. */
struct sock;
KFUNC_PROBE(tcp_sendmsg, struct sock *sk)
{
	first_io(sk, IPPROTO_TCP);
	return 0;
}

KFUNC_PROBE(tcp_recvmsg, struct sock *sk)
{
	first_io(sk, IPPROTO_TCP);
	return 0;
}
#elif HAVE_FIRST_IO == HOOK_KPROBE
#include <uapi/linux/ptrace.h>
struct sock;
int kprobe__tcp_sendmsg(struct pt_regs *ctx, struct sock *sk)
{
	first_io(sk, IPPROTO_TCP);
	return 0;
}

int kprobe__tcp_recvmsg(struct pt_regs *ctx, struct sock *sk)
{
	first_io(sk, IPPROTO_TCP);
	return 0;
}
#endif /* HAVE_FIRST_IO */
