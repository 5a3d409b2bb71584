/* Reconnect delays: exponential growth with full jitter, capped
 * (AWS Architecture Blog, "Exponential Backoff And Jitter"). Spreads a fleet's
 * reconnects after a collector restart instead of synchronising them. */
#ifndef EXFLEET_BACKOFF_H
#define EXFLEET_BACKOFF_H

#include <stdint.h>

struct backoff {
	uint64_t base_ms;  /* ceiling of the first delay */
	uint64_t cap_ms;   /* no delay exceeds this */
	unsigned attempt;  /* failures since the last success */
	uint64_t rng;      /* xorshift state; seed it per process */
};

void backoff_init(struct backoff *b, uint64_t base_ms, uint64_t cap_ms, uint64_t seed);
/* The ceiling for the current attempt: min(cap, base * 2^attempt). */
uint64_t backoff_ceiling(const struct backoff *b);
/* A delay drawn uniformly from [0, ceiling]; then the attempt count grows. */
uint64_t backoff_next(struct backoff *b);
/* After a success: the next failure starts again from base. */
void backoff_reset(struct backoff *b);

#endif
