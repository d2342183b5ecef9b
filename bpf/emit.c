/* emit.c: a record's way out. Every record is counted (aggregate.c) before
 * the knobs decide whether it is sent, and a sent record the buffer drops
 * is counted as lost; then the lifecycle helpers every hook shares. */

/* Whether a counted record goes to user space. The first record of a
 * window row always does: user space reads its process's command line and
 * unit from it while the process lives (a map of pids already seen cost a
 * lookup per record; the row is looked up anyway). */
static __always_inline int want_record(struct conn_record *rec, u8 type, int first, void *row)
{
	int failure = record_is_failure(rec, type);
	u64 mode = knob(KNOB_RECORDS);
	if (mode == REC_NONE || (mode == REC_FAILURES && !failure) ||
	    (mode == REC_ENDS && !failure && type != EV_CLOSE)) {
		if (first)
			return 1;
		count(CNT_NOT_SENT);
		return 0;
	}
	if (failure) {
#if AGGREGATE
		/* A failure storm: past KNOB_FOLD_AFTER records per row and
		 * window (on this CPU), the rest are counted, not sent. */
		struct agg_counts *a = row;
		u64 fold_after = knob(KNOB_FOLD_AFTER);
		if (a && fold_after) {
			if (a->failure_records >= fold_after && !first) {
				__sync_fetch_and_add(&a->folded, 1);
				count(CNT_FOLDED);
				return 0;
			}
			__sync_fetch_and_add(&a->failure_records, 1);
		}
#endif
		return 1;
	}
	u64 n = knob(KNOB_KEEP_ONE_IN);
	if (n > 1 && !first) {
		/* one in n, per CPU (a nested program can skew one tick: fine) */
		u32 idx = CNT_SAMPLE_TICK;
		u64 *tick = counters.lookup(&idx);
		if (tick && ++*tick % n) {
			count(CNT_SAMPLED_OUT);
			return 0;
		}
	}
	return 1;
}

static __always_inline void emit(void *ctx, struct conn_record *rec, u8 type)
{
	void *row = 0;
	int first = 0; /* the record opened its window row: its process may be new */
	rec->type = type;
#if AGGREGATE
	row = aggregate(rec, type, &first);
#endif
	if (!want_record(rec, type, first, row))
		return;
	rec->ts_ns = bpf_ktime_get_ns();
#if USE_RINGBUF
	/* No wake-up per record: the kernel's default wakes the reader for
	 * every record it finds caught up, an irq_work and a context switch
	 * each, measured as the reader's largest cost at 10k connections/s.
	 * The reader consumes on a short tick instead (LoadOptions.ring_tick_ms
	 * in agent/kernel/loader.py); the ring holds far more than one tick of
	 * the heaviest churn. Except a row's first record: it wakes the reader
	 * at once, so that user space reads the command line and unit of a
	 * short-lived process while it still exists. BPF_RB_NO_WAKEUP = 1,
	 * BPF_RB_FORCE_WAKEUP = 2 (uapi/linux/bpf.h). */
	int rc = events.ringbuf_output(rec, sizeof(*rec), first ? 2 : 1);
#else
	int rc = events.perf_submit(ctx, rec, sizeof(*rec));
#endif
	count(rc == 0 ? CNT_EMITTED : CNT_LOST_RINGBUF);
}

/* Emits the last record of a socket and forgets it. A socket that never
 * established is a failed (or aborted) connect attempt; otherwise a close. */
static __always_inline void resolve(void *ctx, struct conn_record *st)
{
	u64 sk = st->skaddr;
	if (st->flags & F_AWAIT_ERR) {
		struct tuple_key k = {};
		tuple_from_state(&k, st);
		closing.delete(&k);
		st->flags &= ~F_AWAIT_ERR;
	}
	if (!st->end_ns)
		st->end_ns = bpf_ktime_get_ns();
	if (st->err)
		st->flags &= ~F_TIME_WAIT;
	if (st->closed_by == CLOSED_BY_NONE && (st->flags & F_ESTABLISHED))
		st->closed_by = (st->resets_received || st->resets_sent) ? CLOSED_BY_RESET
									  : CLOSED_BY_LOCAL;
	if (!(st->flags & F_ESTABLISHED) && st->direction == DIR_OUTBOUND) {
		if (!st->err)
			st->flags |= F_ABORTED;
		emit(ctx, st, EV_CONNECT);
	} else {
		emit(ctx, st, EV_CLOSE);
	}
	socks.delete(&sk);
}

/* Creates the state of a socket from the zeroed template. A state already
 * at this address belongs to a socket whose end was never seen: the kernel
 * skips a tracepoint program that fires while another BPF program runs on
 * the same CPU (the bpf_prog_active guard; counted per program as
 * recursion_misses), and a skipped tcp_destroy_sock leaves its state
 * behind. Emit it, flagged, rather than overwrite it. */
static __always_inline struct conn_record *state_new(void *ctx, u64 sk)
{
	struct conn_record *stale = socks.lookup(&sk);
	if (stale) {
		stale->flags |= F_INCOMPLETE;
		resolve(ctx, stale);
	}
	u32 zero = 0;
	struct conn_record *tmpl = zero_record.lookup(&zero);
	if (!tmpl)
		return 0;
	if (socks.update(&sk, tmpl) != 0) {
		count(CNT_LOST_STATE_MAP);
		return 0;
	}
	struct conn_record *st = socks.lookup(&sk);
	if (st)
		st->skaddr = sk;
	return st;
}
