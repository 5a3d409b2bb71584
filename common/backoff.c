#include "backoff.h"

void backoff_init(struct backoff *b, uint64_t base_ms, uint64_t cap_ms, uint64_t seed)
{
	b->base_ms = base_ms ? base_ms : 1;
	b->cap_ms = cap_ms < b->base_ms ? b->base_ms : cap_ms;
	b->attempt = 0;
	b->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint64_t backoff_ceiling(const struct backoff *b)
{
	uint64_t ceiling = b->base_ms;
	for (unsigned i = 0; i < b->attempt && ceiling < b->cap_ms; i++)
		ceiling *= 2;
	return ceiling < b->cap_ms ? ceiling : b->cap_ms;
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

uint64_t backoff_next(struct backoff *b)
{
	uint64_t ceiling = backoff_ceiling(b);
	if (b->attempt < 64)
		b->attempt++;
	return xorshift64(&b->rng) % (ceiling + 1);
}

void backoff_reset(struct backoff *b)
{
	b->attempt = 0;
}
