/* Latency histograms and the process's memory, for the report. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "loadgen.h"

#define SUB_BITS 4
#define SUB (1u << SUB_BITS)

static unsigned bucket_of(uint64_t v)
{
	if (v < SUB)
		return (unsigned)v;
	unsigned e = 63 - (unsigned)__builtin_clzll(v); /* >= SUB_BITS */
	unsigned sub = (unsigned)(v >> (e - SUB_BITS)) & (SUB - 1);
	return (e - SUB_BITS + 1) * SUB + sub;
}

/* The middle of a bucket's range. */
static uint64_t bucket_value(unsigned b)
{
	if (b < SUB)
		return b;
	unsigned e = b / SUB + SUB_BITS - 1;
	uint64_t width = 1ull << (e - SUB_BITS);
	uint64_t low = (uint64_t)(SUB + b % SUB) << (e - SUB_BITS);
	return low + width / 2;
}

void lg_hist_add(struct lg_hist *h, uint64_t us)
{
	unsigned b = bucket_of(us);
	if (b >= LG_HIST_BUCKETS)
		b = LG_HIST_BUCKETS - 1;
	h->bucket[b]++;
	h->count++;
	if (us > h->max_us)
		h->max_us = us;
}

void lg_hist_merge(struct lg_hist *into, const struct lg_hist *from)
{
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
		into->bucket[i] += from->bucket[i];
	into->count += from->count;
	if (from->max_us > into->max_us)
		into->max_us = from->max_us;
}

uint64_t lg_hist_quantile(const struct lg_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->count);
	if (rank >= h->count)
		rank = h->count - 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen > rank) {
			uint64_t v = bucket_value(i);
			return v < h->max_us ? v : h->max_us;
		}
	}
	return h->max_us;
}

void lg_rss(uint64_t *rss_kb, uint64_t *hwm_kb)
{
	char line[256];
	*rss_kb = *hwm_kb = 0;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long v;
		if (sscanf(line, "VmRSS: %llu", &v) == 1)
			*rss_kb = v;
		else if (sscanf(line, "VmHWM: %llu", &v) == 1)
			*hwm_kb = v;
	}
	fclose(f);
}

int64_t lg_wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
