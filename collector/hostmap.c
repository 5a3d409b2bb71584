#include "hostmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

void hostmap_init(struct hostmap *m)
{
	memset(m, 0, sizeof(*m));
}

void hostmap_free(struct hostmap *m)
{
	free(m->slots);
	hostmap_init(m);
}

static struct hostmap_slot *find(const struct hostmap *m, const char *key)
{
	size_t mask = m->cap - 1;
	for (size_t i = hash(key) & mask;; i = (i + 1) & mask)
		if (!m->slots[i].key || strcmp(m->slots[i].key, key) == 0)
			return &m->slots[i];
}

void *hostmap_get(const struct hostmap *m, const char *key)
{
	if (m->count == 0)
		return NULL;
	struct hostmap_slot *s = find(m, key);
	return s->key ? s->value : NULL;
}

static int grow(struct hostmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 64;
	struct hostmap_slot *old = m->slots;
	size_t old_cap = m->cap;
	m->slots = calloc(cap, sizeof(*m->slots));
	if (!m->slots) {
		m->slots = old;
		return UV_ENOMEM;
	}
	m->cap = cap;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i].key)
			*find(m, old[i].key) = old[i];
	free(old);
	return 0;
}

int hostmap_put(struct hostmap *m, const char *key, void *value)
{
	/* Keep the table at most half full so probes stay short. */
	if ((m->count + 1) * 2 > m->cap && grow(m) < 0)
		return UV_ENOMEM;
	struct hostmap_slot *s = find(m, key);
	if (!s->key)
		m->count++;
	s->key = key;
	s->value = value;
	return 0;
}

void hostmap_remove(struct hostmap *m, const char *key, const void *value)
{
	if (m->count == 0)
		return;
	struct hostmap_slot *s = find(m, key);
	if (!s->key || s->value != value)
		return;
	/* Backward-shift deletion keeps every probe chain unbroken. */
	size_t mask = m->cap - 1;
	size_t hole = (size_t)(s - m->slots);
	s->key = NULL;
	m->count--;
	for (size_t i = (hole + 1) & mask; m->slots[i].key; i = (i + 1) & mask) {
		size_t home = hash(m->slots[i].key) & mask;
		/* Move i into the hole unless its home lies cyclically in (hole, i]. */
		if ((i > hole && (home <= hole || home > i)) ||
		    (i < hole && (home <= hole && home > i))) {
			m->slots[hole] = m->slots[i];
			m->slots[i].key = NULL;
			hole = i;
		}
	}
}
