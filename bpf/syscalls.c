/* syscalls.c: connect(2) and getsockopt(2), in the calling task's context.
 *
 * connect() entry gives the start time and the destination; its exit
 * gives the errno of failures that leave no error report (EADDRNOTAVAIL:
 * no port left, so no SYN and no sk_err) and of failures that never reach
 * TCP at all (ENETUNREACH from the route lookup, EACCES, ...). For the
 * latter only the fd says the socket is TCP (the socket_syscall hook): its
 * socket is read through the fd table at BTF offsets when the connect
 * fails, or, without BTF, socket(2) is tracked, and sockets created before
 * connscope started are then not known to be TCP.
 */

/* A file descriptor of a process: (tgid << 32) | fd. */
static __always_inline u64 fd_key(u64 pid_tgid, u32 fd)
{
	return (pid_tgid & 0xffffffff00000000ULL) | fd;
}

struct sockaddr_in_u {
	u16 family;
	u16 port; /* network order */
	u8 addr[4];
};

struct sockaddr_in6_u {
	u16 family;
	u16 port;
	u32 flowinfo;
	u8 addr[16];
};

/* (guards name their own hook's flag first: agent/kernel/culprit.py blames it) */
#if HAVE_SO_ERROR_SYSCALL && HAVE_CONNECT_SYSCALL
/* A non-blocking connect in progress, by (tgid << 32) | fd: which socket
 * a later getsockopt(SO_ERROR) on that fd asks about. start_ns tells a
 * reused fd or socket address apart. */
struct connecting_fd {
	u64 sk;
	u64 start_ns;
};
BPF_TABLE("lru_hash", u64, struct connecting_fd, connecting_fds, MAX_CALLS);

static __always_inline void connecting_fd_add(u64 id, struct connect_call *call, u64 sk)
{
	struct conn_record *st = socks.lookup(&sk);
	if (!st)
		return;
	u64 key = fd_key(id, call->fd);
	struct connecting_fd c = {.sk = sk, .start_ns = st->start_ns};
	connecting_fds.update(&key, &c);
}

/* getsockopt(SO_ERROR) calls in flight, by thread id. */
struct so_error_call {
	u64 optval;
	u32 fd;
	u32 _pad;
};
BPF_TABLE("lru_hash", u32, struct so_error_call, so_error_calls, MAX_CALLS);

#define SOL_SOCKET 1
#define SO_ERROR 4

TRACEPOINT_PROBE(syscalls, sys_enter_getsockopt)
{
	if (args->level != SOL_SOCKET || args->optname != SO_ERROR)
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct so_error_call c = {.optval = (u64)args->optval, .fd = (u32)args->fd};
	so_error_calls.update(&tid, &c);
	return 0;
}

/* An ICMP error that arrives while connect() holds the socket's lock (on a
 * same-host path: during the SYN's own transmit) is only kept as the
 * socket's soft error: no errno reaches the error report, the socket stays
 * in SYN_SENT, and the application learns it from SO_ERROR, then closes.
 * That errno is what the application saw: the attempt's errno, not ABORTED. */
TRACEPOINT_PROBE(syscalls, sys_exit_getsockopt)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct so_error_call *c = so_error_calls.lookup(&tid);
	if (!c)
		return 0;
	u64 optval = c->optval;
	u64 key = fd_key(id, c->fd);
	so_error_calls.delete(&tid);
	int val = 0;
	if (args->ret != 0 || bpf_probe_read_user(&val, sizeof(val), (void *)optval) != 0 || val <= 0)
		return 0;
	struct connecting_fd *cf = connecting_fds.lookup(&key);
	if (!cf)
		return 0;
	u64 sk = cf->sk;
	struct conn_record *st = socks.lookup(&sk);
	if (st && st->start_ns == cf->start_ns && !(st->flags & (F_ESTABLISHED | F_CLOSING)) && !st->err)
		st->err = val;
	connecting_fds.delete(&key);
	return 0;
}
#endif /* HAVE_SO_ERROR_SYSCALL && HAVE_CONNECT_SYSCALL */

#if HAVE_SOCKET_SYSCALL == HOOK_FD_WALK && defined(OFF_TASK_FILES)
#define ENOTSOCK 88
#define EBADF 9
/* Whether a failed connect's fd is a TCP socket, read through the task's
 * fd table at BTF offsets (agent/kernel/sock_fields.py, FD_WALK). connect()
 * failed with neither EBADF nor ENOTSOCK, so the fd held a socket: its
 * file's private_data is a struct socket. */
static __always_inline int fd_is_tcp(u64 id, u32 fd, long ret)
{
	if (ret == -EBADF || ret == -ENOTSOCK)
		return 0;
	u64 task = bpf_get_current_task();
	u64 files = 0, fdt = 0, fds = 0, file = 0, sock = 0, sk = 0;
	u32 max_fds = 0;
	u16 family = 0, type = 0;
	SK_READ(files, task, OFF_TASK_FILES);
	if (!files)
		return 0;
	SK_READ(fdt, files, OFF_FILES_FDT);
	if (!fdt)
		return 0;
	SK_READ(max_fds, fdt, OFF_FDT_MAX_FDS);
	if (fd >= max_fds)
		return 0;
	SK_READ(fds, fdt, OFF_FDT_FD);
	if (!fds || bpf_probe_read_kernel(&file, sizeof(file), (void *)(fds + (u64)fd * 8)) || !file)
		return 0;
	SK_READ(sock, file, OFF_FILE_PRIVATE_DATA);
	if (!sock)
		return 0;
	SK_READ(sk, sock, OFF_SOCKET_SK);
	if (!sk)
		return 0;
	SK_READ(family, sk, OFF_SK_FAMILY);
	SK_READ(type, sk, OFF_SK_TYPE);
	return (family == AF_INET || family == AF_INET6) && type == SOCK_STREAM &&
	       sk_protocol(sk) == IPPROTO_TCP;
}
#elif HAVE_SOCKET_SYSCALL
/* socket(2) calls in flight (tid -> is_tcp), and fds known to be TCP
 * sockets ((tgid << 32) | fd -> 1), for failures that never reach TCP. */
BPF_TABLE("lru_hash", u32, u8, socket_calls, MAX_CALLS);
BPF_TABLE("lru_hash", u64, u8, tcp_fds, MAX_SOCKS);

static __always_inline int fd_is_tcp(u64 id, u32 fd, long ret)
{
	u64 fdkey = fd_key(id, fd);
	u8 *is_tcp = tcp_fds.lookup(&fdkey);
	return is_tcp && *is_tcp;
}
#else
static __always_inline int fd_is_tcp(u64 id, u32 fd, long ret)
{
	return 0; /* unknown: a pre-TCP failure is not reported */
}
#endif

#if HAVE_CONNECT_SYSCALL
TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
	void *uaddr = (void *)args->uservaddr;
	/* one read of the larger form; an IPv4 sockaddr is its prefix */
	struct sockaddr_in6_u sa = {};
	u32 len = args->addrlen < sizeof(sa) ? args->addrlen : sizeof(sa);
	if (len < sizeof(struct sockaddr_in_u) || bpf_probe_read_user(&sa, len & 0x1f, uaddr) != 0)
		return 0;
	struct connect_call c = {};
	c.family = sa.family;
	if (sa.family == AF_INET) {
		struct sockaddr_in_u *sin = (void *)&sa;
		c.dport = __builtin_bswap16(sin->port);
		__builtin_memcpy(c.daddr, sin->addr, 4);
	} else if (sa.family == AF_INET6 && len >= sizeof(sa)) {
		c.dport = __builtin_bswap16(sa.port);
		__builtin_memcpy(c.daddr, sa.addr, 16);
	} else {
		return 0; /* AF_UNSPEC (disconnect), AF_UNIX, ... */
	}
	c.fd = (u32)args->fd;
	c.start_ns = bpf_ktime_get_ns();
	u32 tid = (u32)bpf_get_current_pid_tgid();
	calls.update(&tid, &c);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	struct connect_call *call = calls.lookup(&tid);
	if (!call)
		return 0;
	long ret = args->ret;
#if HAVE_SO_ERROR_SYSCALL
	if (ret == -EINPROGRESS && call->skaddr)
		connecting_fd_add(id, call, call->skaddr);
#endif
	if (ret >= 0 || ret == -EINPROGRESS || ret == -EALREADY || ret == -EISCONN)
		goto out;

	if (call->skaddr) {
		/* TCP ran: the socket's own events resolve it, except when
		 * it closed with no error report (EADDRNOTAVAIL). */
		u64 sk = call->skaddr;
		struct conn_record *st = socks.lookup(&sk);
		if (st && (st->flags & F_CLOSING) && !(st->flags & F_ESTABLISHED)) {
			if (!st->err)
				st->err = -ret;
			resolve(args, st);
		}
		goto out;
	}

	if (!fd_is_tcp(id, call->fd, ret))
		goto out;
	u32 zero = 0;
	struct conn_record *tmpl = zero_record.lookup(&zero);
	if (!tmpl)
		goto out;
	struct conn_record rec = *tmpl;
	owner_from_current(&rec, PID_SRC_SYSCALL);
	rec.direction = DIR_OUTBOUND;
	rec.family = call->family;
	rec.dport = call->dport;
	__builtin_memcpy(rec.daddr, call->daddr, 16);
	rec.start_ns = call->start_ns;
	rec.end_ns = bpf_ktime_get_ns();
	rec.err = -ret;
	rec.flags = F_SYSCALL_ONLY;
	emit(args, &rec, EV_CONNECT);
out:
	calls.delete(&tid);
	return 0;
}
#endif /* HAVE_CONNECT_SYSCALL */

#if HAVE_SOCKET_SYSCALL == HOOK_TRACEPOINT
TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
	int family = args->family, type = args->type & 0xf, proto = args->protocol;
	u8 is_tcp = (family == AF_INET || family == AF_INET6) && type == SOCK_STREAM &&
		    (proto == 0 || proto == IPPROTO_TCP);
	u32 tid = (u32)bpf_get_current_pid_tgid();
	socket_calls.update(&tid, &is_tcp);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = (u32)id;
	u8 *is_tcp = socket_calls.lookup(&tid);
	if (!is_tcp)
		return 0;
	long fd = args->ret;
	if (fd >= 0) {
		/* written for every new socket, so a reused fd number is
		 * overwritten with the truth */
		u64 key = fd_key(id, (u32)fd);
		u8 v = *is_tcp;
		tcp_fds.update(&key, &v);
	}
	socket_calls.delete(&tid);
	return 0;
}
#endif /* HAVE_SOCKET_SYSCALL */
