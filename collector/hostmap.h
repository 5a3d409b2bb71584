/* Host id -> pointer, for finding a host's live session among thousands:
 * open addressing with linear probing, keys owned by the caller's values. */
#ifndef EXFLEET_HOSTMAP_H
#define EXFLEET_HOSTMAP_H

#include <stddef.h>

struct hostmap_slot {
	const char *key; /* NULL: empty; points into the value */
	void *value;
};

struct hostmap {
	struct hostmap_slot *slots;
	size_t cap;  /* a power of two */
	size_t count;
};

void hostmap_init(struct hostmap *m);
void hostmap_free(struct hostmap *m);
void *hostmap_get(const struct hostmap *m, const char *key);
/* Sets key to value (key must stay valid while it is in the map). */
int hostmap_put(struct hostmap *m, const char *key, void *value);
/* Removes key if it maps to value (a replaced session must not remove
 * its successor). */
void hostmap_remove(struct hostmap *m, const char *key, const void *value);

#endif
