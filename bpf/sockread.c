/* sockread.c: a socket's addresses and ports, from a tracepoint's record or
 * from the socket itself at BTF offsets, and the tuple that identifies a
 * connection where no socket address is given.
 */

/* Reads from the tracepoint record go through bpf_probe_read_kernel: the
 * verifier refuses loads from a ctx pointer the compiler has offset.
 * Tracepoint records lay out addresses alike but are distinct types, so
 * these are macros. Zero ports are skipped: CLOSE->SYN_SENT and a failed
 * port allocation report sport 0, and a later event has the real one. */
#define STORE_ADDRS(st, a)                                                 \
	do {                                                               \
		(st)->family = (a)->family;                                \
		if ((a)->sport)                                            \
			(st)->sport = (a)->sport;                          \
		if ((a)->dport)                                            \
			(st)->dport = (a)->dport;                          \
		if ((a)->family == AF_INET) {                              \
			bpf_probe_read_kernel((st)->saddr, 4, (a)->saddr);      \
			bpf_probe_read_kernel((st)->daddr, 4, (a)->daddr);      \
		} else {                                                   \
			bpf_probe_read_kernel((st)->saddr, 16, (a)->saddr_v6);  \
			bpf_probe_read_kernel((st)->daddr, 16, (a)->daddr_v6);  \
		}                                                          \
	} while (0)

#define TUPLE_FROM_ARGS(k, a)                                              \
	do {                                                               \
		__builtin_memset(&(k), 0, sizeof(k));                      \
		(k).sport = (a)->sport;                                    \
		(k).dport = (a)->dport;                                    \
		(k).family = (a)->family;                                  \
		if ((a)->family == AF_INET)                                \
			bpf_probe_read_kernel((k).daddr, 4, (a)->daddr);        \
		else                                                       \
			bpf_probe_read_kernel((k).daddr, 16, (a)->daddr_v6);    \
	} while (0)

/* The socket fields of a sock: tracepoint record, as the programs behind
 * both methods see them: the tracepoint copies its record here, the raw
 * tracepoint reads the socket the same way TP_fast_assign does. */
struct sk_fields {
	u64 skaddr;
	int oldstate;
	int newstate;
	int error;
	u16 sport;
	u16 dport;
	u16 family;
	u16 protocol;
	u8 saddr[4];
	u8 daddr[4];
	u8 saddr_v6[16];
	u8 daddr_v6[16];
};

/* (inet_sk_error_report's record has no skaddr) */
#define SK_FIELDS_FROM_RECORD(f, a)                                        \
	do {                                                               \
		(f).sport = (a)->sport;                                    \
		(f).dport = (a)->dport;                                    \
		(f).family = (a)->family;                                  \
		(f).protocol = (a)->protocol;                              \
		bpf_probe_read_kernel((f).saddr, 4, (a)->saddr);           \
		bpf_probe_read_kernel((f).daddr, 4, (a)->daddr);           \
		bpf_probe_read_kernel((f).saddr_v6, 16, (a)->saddr_v6);    \
		bpf_probe_read_kernel((f).daddr_v6, 16, (a)->daddr_v6);    \
	} while (0)

/* Offsets come from the running kernel's BTF (agent/kernel/sock_fields.py),
 * never from the headers BCC compiles against. */
#define SK_READ(dst, sk, off) bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)((sk) + (off)))

#ifdef OFF_SK_PROTOCOL
static __always_inline u16 sk_protocol(u64 sk)
{
	u16 v = 0;
	SK_READ(v, sk, OFF_SK_PROTOCOL);
	return v;
}

static __always_inline void sk_fields_read(struct sk_fields *f, u64 sk)
{
	u16 port = 0;
	f->skaddr = sk;
	f->protocol = sk_protocol(sk);
	SK_READ(f->family, sk, OFF_SK_FAMILY);
	SK_READ(port, sk, OFF_INET_SPORT);
	f->sport = __builtin_bswap16(port);
	port = 0;
	SK_READ(port, sk, OFF_SK_DPORT);
	f->dport = __builtin_bswap16(port);
	SK_READ(f->saddr, sk, OFF_INET_SADDR);
	SK_READ(f->daddr, sk, OFF_SK_DADDR);
	if (f->family == AF_INET6) {
		SK_READ(f->saddr_v6, sk, OFF_SK_V6_RCV_SADDR);
		SK_READ(f->daddr_v6, sk, OFF_SK_V6_DADDR);
	}
}
#endif /* OFF_SK_PROTOCOL */

static __always_inline void tuple_from_state(struct tuple_key *k, struct conn_record *st)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->daddr, st->daddr, 16);
	k->sport = st->sport;
	k->dport = st->dport;
	k->family = st->family;
}

