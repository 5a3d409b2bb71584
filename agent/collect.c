#include "collect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

static const char *const level_names[] = {
	[EXFLEET__EVENT_TYPE__EVENT_SUCCESS] = "success",
	[EXFLEET__EVENT_TYPE__EVENT_ERROR] = "error",
	[EXFLEET__EVENT_TYPE__EVENT_WARNING] = "warning",
	[EXFLEET__EVENT_TYPE__EVENT_INFORMATION] = "information",
	[EXFLEET__EVENT_TYPE__EVENT_AUDIT_SUCCESS] = "audit_success",
	[EXFLEET__EVENT_TYPE__EVENT_AUDIT_FAILURE] = "audit_failure",
};

#define NLEVELS (sizeof(level_names) / sizeof(level_names[0]))

int collect_init(struct collect *c, const struct agent_config *cfg,
		 const struct probe_backend *backend, struct probe *probe, struct spool *spool,
		 char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->cfg = cfg;
	c->backend = backend;
	c->probe = probe;
	c->spool = spool;
	snprintf(c->cursor, sizeof(c->cursor), "%s", spool_state(spool));
	for (size_t i = 0; i < cfg->event_levels.count; i++) {
		const char *name = cfg->event_levels.items[i];
		size_t k;
		for (k = 0; k < NLEVELS; k++)
			if (level_names[k] && strcmp(level_names[k], name) == 0)
				break;
		if (k == NLEVELS) {
			snprintf(err, errlen,
				 "[events] levels: '%s' is not one of: error, warning, information, "
				 "audit_success, audit_failure, success",
				 name);
			return UV_EINVAL;
		}
		c->level_mask |= 1u << k;
	}
	for (size_t i = 0; i < cfg->event_always.count; i++) {
		const char *slash = strchr(cfg->event_always.items[i], '/');
		if (!slash || slash == cfg->event_always.items[i] || !slash[1] ||
		    strspn(slash + 1, "0123456789") != strlen(slash + 1)) {
			snprintf(err, errlen, "[events] always: '%s' is not SOURCE/ID",
				 cfg->event_always.items[i]);
			return UV_EINVAL;
		}
	}
	return 0;
}

void collect_forget_snapshot(struct collect *c)
{
	free(c->last_snapshot);
	c->last_snapshot = NULL;
	c->last_len = 0;
}

void collect_free(struct collect *c)
{
	collect_forget_snapshot(c);
}

static int watched(const struct agent_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->watched_services.count; i++)
		if (strcmp(cfg->watched_services.items[i], name) == 0)
			return 1;
	return 0;
}

static int forwarded(const struct collect *c, const Exfleet__Event *e)
{
	if ((unsigned)e->type < NLEVELS && (c->level_mask & (1u << e->type)))
		return 1;
	for (size_t i = 0; i < c->cfg->event_always.count; i++) {
		const char *item = c->cfg->event_always.items[i];
		const char *slash = strchr(item, '/');
		size_t len = (size_t)(slash - item);
		if (strlen(e->source) == len && strncmp(e->source, item, len) == 0 &&
		    strtoul(slash + 1, NULL, 10) == e->event_id)
			return 1;
	}
	return 0;
}

static void report(struct collect *c, const char *what, const char *err)
{
	if (strcmp(c->last_error, err) == 0)
		return;
	snprintf(c->last_error, sizeof(c->last_error), "%s", err);
	log_warn("%s: %s", what, err);
}

static int append(struct collect *c, enum spool_kind kind, const ProtobufCMessage *m,
		  const char *state)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return UV_ENOMEM;
	protobuf_c_message_pack(m, buf);
	char err[256];
	int rc = spool_append(c->spool, kind, buf, len, state, NULL, err, sizeof(err));
	free(buf);
	if (rc < 0)
		log_err("%s", err);
	return rc;
}

/* Spools a snapshot when the host differs from the last one spooled. */
static int collect_snapshot(struct collect *c)
{
	Exfleet__Snapshot *snap = NULL;
	char err[256] = "";
	if (c->backend->read_host(c->probe, &snap, err, sizeof(err)) < 0 || !snap) {
		report(c, "reading the host", err[0] ? err : "no state");
		return 0;
	}
	if (err[0])
		report(c, "reading the host", err); /* still the last good state */
	else
		c->last_error[0] = '\0';

	/* Only the watched services are reported. */
	size_t kept = 0;
	for (size_t i = 0; i < snap->n_services; i++) {
		if (watched(c->cfg, snap->services[i]->name))
			snap->services[kept++] = snap->services[i];
		else
			exfleet__service__free_unpacked(snap->services[i], NULL);
	}
	snap->n_services = kept;

	/* Compare without the fields that change every time. */
	size_t len = exfleet__snapshot__get_packed_size(snap);
	uint8_t *bytes = malloc(len ? len : 1);
	int rc = 0;
	if (!bytes) {
		rc = UV_ENOMEM;
		goto out;
	}
	exfleet__snapshot__pack(snap, bytes);
	if (c->last_snapshot && c->last_len == len && memcmp(c->last_snapshot, bytes, len) == 0) {
		free(bytes);
		goto out;
	}
	snap->sequence = spool_next_sequence(c->spool);
	snap->observed_at_ms = util_now_ms();
	rc = append(c, SPOOL_SNAPSHOT, &snap->base, NULL);
	if (rc < 0) {
		free(bytes);
		goto out;
	}
	free(c->last_snapshot);
	c->last_snapshot = bytes;
	c->last_len = len;
	c->snapshots++;
	rc = 1;
out:
	exfleet__snapshot__free_unpacked(snap, NULL);
	return rc;
}

/* Spools forwarded events one at a time, each with the cursor just past it,
 * so the spool's state always matches the events it holds. */
static int collect_events(struct collect *c, int *more)
{
	int appended = 0;
	*more = 0;
	for (int n = 0; n < COLLECT_EVENTS_PER_RUN; n++) {
		Exfleet__Event **events = NULL;
		size_t count = 0;
		char cursor[sizeof(c->cursor)];
		char err[256] = "";
		memcpy(cursor, c->cursor, sizeof(cursor));
		if (c->backend->read_events(c->probe, cursor, sizeof(cursor), 1, &events, &count, err,
					    sizeof(err)) < 0) {
			report(c, "reading the event log", err);
			return appended;
		}
		if (count == 0) {
			free(events);
			return appended;
		}
		int rc = 0;
		Exfleet__Event *e = events[0];
		if (forwarded(c, e)) {
			e->sequence = spool_next_sequence(c->spool);
			rc = append(c, SPOOL_EVENT, &e->base, cursor);
			if (rc == 0) {
				appended++;
				c->events++;
			}
		} else {
			c->filtered++;
		}
		for (size_t i = 0; i < count; i++)
			exfleet__event__free_unpacked(events[i], NULL);
		free(events);
		if (rc < 0)
			return rc;
		memcpy(c->cursor, cursor, sizeof(cursor));
	}
	*more = 1;
	return appended;
}

int collect_run(struct collect *c, int *more)
{
	int snapped = collect_snapshot(c);
	if (snapped < 0)
		return snapped;
	int events = collect_events(c, more);
	if (events < 0)
		return events;
	if (snapped + events > 0) {
		char err[256];
		if (spool_sync(c->spool, err, sizeof(err)) < 0) {
			log_err("%s", err);
			return UV_EIO;
		}
	}
	return snapped + events;
}
