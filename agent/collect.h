/* Collection: reads the host through the probe and turns what changed into
 * spooled records, a snapshot when the host state differs from the last one,
 * and each forwarded event-log record. The event-log cursor is committed in
 * the spool with the records it covers, so a crash neither loses nor repeats
 * an event. */
#ifndef EXFLEET_COLLECT_H
#define EXFLEET_COLLECT_H

#include <stddef.h>
#include <stdint.h>

#include "agent.h"

/* Work per call is bounded; the rest waits for the next call. */
#define COLLECT_EVENTS_PER_RUN 2000

struct collect {
	const struct agent_config *cfg;
	const struct probe_backend *backend;
	struct probe *probe;
	struct spool *spool;
	uint8_t *last_snapshot;   /* encoded without sequence and time */
	size_t last_len;
	char cursor[SPOOL_MAX_STATE + 1];
	unsigned level_mask;      /* bit (1 << EventType) per level forwarded */
	char last_error[256];     /* logged once until it changes */
	uint64_t snapshots, events, filtered;
};

int collect_init(struct collect *c, const struct agent_config *cfg,
		 const struct probe_backend *backend, struct probe *probe, struct spool *spool,
		 char *err, size_t errlen);
void collect_free(struct collect *c);

/* Reads the host and its new events and spools what changed, then makes the
 * spool durable. Returns the records appended (0 or more), or negative when
 * the spool failed; *more is set when events remain for another call. */
int collect_run(struct collect *c, int *more);

/* Forgets the last snapshot so the next run spools one (RESCAN). */
void collect_forget_snapshot(struct collect *c);

#endif
