/* listen.c: who owns each listening port.
 *
 * Server-side transitions fire in whatever context delivers the packet
 * (softirq, or the peer's syscall on loopback), so an inbound connection
 * takes its owner from the listener: recorded here when listen() moves a
 * socket CLOSE->LISTEN, in the calling task's context. Listeners that
 * predate connscope are seeded from user space (agent/kernel/listeners.py).
 */

static __always_inline void listener_key_from(struct listener_key *k, u16 family,
					      const u8 *addr4, const u8 *addr6, u16 port)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = family;
	k->port = port;
	if (family == AF_INET)
		bpf_probe_read_kernel(k->addr, 4, addr4);
	else
		bpf_probe_read_kernel(k->addr, 16, addr6);
}

static __always_inline void listener_add(struct listener_key *k)
{
	struct listener_owner o = {};
	o.pid = bpf_get_current_pid_tgid() >> 32;
	o.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&o.comm, sizeof(o.comm));
	if (listeners.update(k, &o) != 0)
		count(CNT_LISTENER_MAP);
}

/* Exact address first, then the family's wildcard, then the IPv6
 * wildcard (a dual-stack [::] listener accepts IPv4 connections). */
static __always_inline struct listener_owner *listener_find(struct listener_key *k)
{
	struct listener_owner *o = listeners.lookup(k);
	if (o)
		return o;
	__builtin_memset(k->addr, 0, sizeof(k->addr));
	o = listeners.lookup(k);
	if (o || k->family == AF_INET6)
		return o;
	k->family = AF_INET6;
	return listeners.lookup(k);
}
