/* aggregate.c: window counts and histograms, kept in the kernel.
 *
 * Every record emit() sees is counted here before the buffer is tried, so
 * summaries stay exact when the buffer drops records, when records are
 * sampled or folded, and when none are sent at all (service mode). Compiled
 * in only when something summarises (-DAGGREGATE=1): plain tracing pays
 * nothing.
 *
 * Two generations of maps: the programs write the one knobs[KNOB_GEN]
 * names; at a window's end user space flips the knob and takes the other
 * map whole with BPF_MAP_LOOKUP_AND_DELETE_BATCH (agent/kernel/aggmaps.py),
 * after a 10 ms grace: a program that read the knob just before the flip
 * adds to the old generation's row through the pointer it looked up, and
 * programs run for microseconds, so the take finds those adds done.
 */
#ifndef AGGREGATE
#define AGGREGATE 0
#endif
#ifndef MAX_AGG_ROWS
#define MAX_AGG_ROWS 16384
#endif
#ifndef MAX_AGG_BINS
#define MAX_AGG_BINS 16384 /* per generation: a row fills tens of bins */
#endif

/* A connect attempt that failed: an errno, or abandoned by the application
 * during the handshake. The one definition on the C side; its Python twin is
 * connect_failed() in agent/decode/events.py. */
static __always_inline int connect_failed(struct conn_record *rec)
{
	return rec->err || (rec->flags & F_ABORTED);
}

/* What `--failures` and the service's failure records keep: a failed
 * attempt, or a connection that ended with an errno or a reset. Twin of
 * is_failure() in agent/filters.py. */
static __always_inline int record_is_failure(struct conn_record *rec, u8 type)
{
	if (type == EV_CONNECT)
		return connect_failed(rec);
	if (type == EV_CLOSE)
		return rec->err || rec->closed_by == CLOSED_BY_RESET;
	return 0;
}

#if AGGREGATE
/* Per-CPU: a client and its server on two CPUs would otherwise bounce one
 * cache line per count between them. Rows are not preallocated: per-CPU
 * values of every possible row (128 bytes) on a 64-CPU host would be
 * hundreds of MB. Bins are (8 bytes per CPU): measured with
 * bench/bpfcost.py, the same lookups in a map that is not preallocated
 * cost about 0.5 us more per close and 1 to 2 us per connection in all. */
BPF_F_TABLE("percpu_hash", struct agg_key, struct agg_counts, agg_rows0, MAX_AGG_ROWS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("percpu_hash", struct agg_key, struct agg_counts, agg_rows1, MAX_AGG_ROWS, BPF_F_NO_PREALLOC);
BPF_F_TABLE("percpu_hash", struct agg_bin_key, u64, agg_bins0, MAX_AGG_BINS, 0);
BPF_F_TABLE("percpu_hash", struct agg_bin_key, u64, agg_bins1, MAX_AGG_BINS, 0);
BPF_ARRAY(dd_bins, struct dd_bin, DD_SLOTS);
BPF_ARRAY(zero_counts, struct agg_counts, 1);

/* floor(log2(v)) for v > 0, without a loop or clz (BPF has neither). */
static __always_inline u32 log2_u64(u64 v)
{
	u32 r = 0, s;
	s = (v > 0xFFFFFFFFULL) << 5; v >>= s; r |= s;
	s = (v > 0xFFFF) << 4; v >>= s; r |= s;
	s = (v > 0xFF) << 3; v >>= s; r |= s;
	s = (v > 0xF) << 2; v >>= s; r |= s;
	s = (v > 0x3) << 1; v >>= s; r |= s;
	return r | (u32)(v >> 1);
}

/* The DDSketch key of v ns taken in us, exactly as the Python library's
 * LogarithmicMapping computes it (the table says where each bin ends). */
static __always_inline int dd_key(u64 v, s32 *key)
{
	if (!v)
		v = 1;
	u32 b = log2_u64(v);
	u32 m = b >= DD_SUB_BITS ? (u32)(v >> (b - DD_SUB_BITS)) : (u32)(v << (DD_SUB_BITS - b));
	u32 slot = (b << DD_SUB_BITS) | (m & ((1 << DD_SUB_BITS) - 1));
	struct dd_bin *e = dd_bins.lookup(&slot);
	if (!e)
		return -1;
	*key = e->key + (v > e->last);
	return 0;
}

/* The row of k in generation gen; *created says this record made it (the
 * row's first record in this window). */
static __always_inline struct agg_counts *agg_row(u64 gen, struct agg_key *k, int *created)
{
	struct agg_counts *a = gen ? agg_rows1.lookup(k) : agg_rows0.lookup(k);
	if (a)
		return a;
	u32 zero = 0;
	struct agg_counts *z = zero_counts.lookup(&zero);
	if (!z)
		return 0;
	/* NOEXIST: when two CPUs create the row at once, the loser adds to the
	 * winner's row instead of overwriting it */
	int rc = gen ? agg_rows1.insert(k, z) : agg_rows0.insert(k, z);
	*created = rc == 0;
	a = gen ? agg_rows1.lookup(k) : agg_rows0.lookup(k);
	if (!a)
		count(CNT_AGG_FULL);
	return a;
}

static __always_inline void agg_bin(u64 gen, struct agg_bin_key *bk, u8 kind, s32 index)
{
	u64 one = 1;
	bk->kind = kind;
	bk->index = index;
	u64 *n = gen ? agg_bins1.lookup(bk) : agg_bins0.lookup(bk);
	if (n) {
		__sync_fetch_and_add(n, 1); /* this CPU's slot; atomic against nesting */
		return;
	}
	int rc = gen ? agg_bins1.insert(bk, &one) : agg_bins0.insert(bk, &one);
	if (rc == 0)
		return;
	n = gen ? agg_bins1.lookup(bk) : agg_bins0.lookup(bk);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		count(CNT_AGG_FULL);
}

/* atomic: per-CPU, but a raw tracepoint program can interrupt another one
 * here; most added values are 0 and skip the locked add */
#define ADD(field, n)                                                      \
	do {                                                               \
		if (n)                                                     \
			__sync_fetch_and_add(&a->field, (n));              \
	} while (0)

/* The row key of a connection: its process, and its destination (the
 * remote end outbound, the listening port inbound). */
static __always_inline void agg_key_of(struct agg_key *k, struct conn_record *rec)
{
	k->cgroup_id = rec->cgroup_id;
	k->pid = rec->pid;
	k->family = rec->family;
	k->direction = rec->direction;
	__builtin_memcpy(k->comm, rec->comm, sizeof(k->comm));
	if (rec->direction == DIR_INBOUND) {
		k->port = rec->sport; /* the listening port; the peer is many */
	} else {
		k->port = rec->dport;
		__builtin_memcpy(k->daddr, rec->daddr, sizeof(k->daddr));
	}
}

/* A write of an open connection that Nagle's algorithm holds (nagle.c). */
static __always_inline void aggregate_nagle_hold(struct conn_record *rec)
{
	struct agg_key k = {};
	int created = 0;
	agg_key_of(&k, rec);
	struct agg_counts *a = agg_row(knob(KNOB_GEN) & 1, &k, &created);
	if (a)
		__sync_fetch_and_add(&a->nagle_holds, 1);
}

/* Counts one record into its row; returns the row (for folding) or 0, and
 * in *first whether the record opened its row for this window. */
static __always_inline struct agg_counts *aggregate(struct conn_record *rec, u8 type, int *first)
{
	u64 gen = knob(KNOB_GEN) & 1;
	struct agg_bin_key bk = {};
	struct agg_key *k = &bk.row;
	agg_key_of(k, rec);
	struct agg_counts *a = agg_row(gen, k, first);
	if (!a)
		return 0;
	s32 key;
	if (type == EV_CONNECT) {
		ADD(syn_retransmits, rec->syn_retransmits);
		ADD(resets_received, rec->resets_received);
		if (connect_failed(rec)) {
			ADD(connects_failed, 1);
			agg_bin(gen, &bk, BIN_FAILURE, rec->err);
			/* how long the application waited for the failure: a
			 * timeout left at the kernel's default shows here */
			if (rec->start_ns && rec->end_ns > rec->start_ns &&
			    rec->end_ns - rec->start_ns > a->failure_wait_max_ns)
				a->failure_wait_max_ns = rec->end_ns - rec->start_ns;
		} else {
			ADD(connects_ok, 1);
			if (rec->start_ns && rec->established_ns) {
				u64 lat = rec->established_ns - rec->start_ns;
				/* per CPU: a nested program can only lose a max to
				 * a larger one's overwrite, never invent one */
				if (lat > a->latency_max_ns)
					a->latency_max_ns = lat;
				if (rec->syn_retransmits)
					ADD(syn_stalled, 1);
				if (dd_key(lat, &key) == 0)
					agg_bin(gen, &bk, BIN_LATENCY, key);
			} else {
				ADD(connects_untimed, 1);
			}
		}
	} else if (type == EV_ACCEPT) {
		ADD(accepts, 1);
		ADD(synack_retransmits, rec->synack_retransmits);
	} else {
		ADD(closes, 1);
		if (rec->flags & F_TIME_WAIT)
			ADD(active_closes, 1);
		ADD(retransmits, rec->retransmits);
		ADD(resets_sent, rec->resets_sent);
		ADD(resets_received, rec->resets_received);
		/* an established connection that failed: ETIMEDOUT after
		 * retransmissions or keepalive probes, ECONNRESET, EPIPE... */
		if (rec->err)
			agg_bin(gen, &bk, BIN_CLOSE_ERROR, rec->err);
		if (rec->health & H_READ) {
			ADD(bytes_sent, rec->bytes_sent);
			ADD(bytes_received, rec->bytes_received);
			if (rec->srtt_us && dd_key((u64)rec->srtt_us * 1000, &key) == 0)
				agg_bin(gen, &bk, BIN_RTT, key);
		}
		if (rec->established_ns && rec->end_ns && !(rec->flags & F_PREEXISTING)) {
			u64 life = rec->end_ns - rec->established_ns;
			if (life < knob(KNOB_SHORT_LIFETIME_NS))
				ADD(short_lived, 1);
			if (dd_key(life, &key) == 0)
				agg_bin(gen, &bk, BIN_LIFETIME, key);
		}
	}
	return a;
}
#undef ADD
#endif /* AGGREGATE */
