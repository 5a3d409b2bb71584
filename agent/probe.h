/* The probe: everything the agent reads from and changes on its host, behind
 * one seam. Backends: "sim" (a simulated Exchange 5.5 host in a JSON file) and
 * "win32" (the Windows APIs). Nothing above this header knows which is used.
 *
 * Host state is returned in the wire types (Exfleet__Snapshot, Exfleet__Event)
 * so it goes to the spool without conversion. A backend allocates every string,
 * array and sub-message it returns with malloc, so the caller frees them with
 * exfleet__snapshot__free_unpacked(x, NULL) / exfleet__event__free_unpacked.
 *
 * Calls are synchronous and quick; waiting (for a service to reach RUNNING)
 * is done above the seam with timers. Every action reports a Win32 error code
 * and its text in a struct probe_result: 0 and "" on success. */
#ifndef EXFLEET_PROBE_H
#define EXFLEET_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "exfleet.pb-c.h"
#include "winerr.h"

struct probe_result {
	uint32_t win32_error;
	char message[256];     /* the error's text, or what was observed */
};

/* Fills r with code and its text (winerr_text), or a formatted detail. */
void probe_result_set(struct probe_result *r, uint32_t code, const char *fmt, ...);

struct probe_settings {
	const char *host_file;        /* sim: the host's JSON file */
	uint64_t rescan_ms;           /* safety-net rescan interval (default 10 s) */
	const char *state_dir;        /* where a backend may keep a small state file
				       * across restarts (the spool directory) */
};

struct probe;

struct probe_backend {
	const char *name;
	int (*open)(struct probe **out, uv_loop_t *loop, const struct probe_settings *s,
		    char *err, size_t errlen);
	/* Closes handles; done_cb (may be NULL) once they are closed. */
	void (*close)(struct probe *p, void (*done_cb)(void *arg), void *arg);

	/* The whole host state, with every field of Snapshot filled but
	 * sequence and observed_at_ms. On a read error the backend keeps
	 * serving its last good state where it has one and says so in err. */
	int (*read_host)(struct probe *p, Exfleet__Snapshot **out, char *err, size_t errlen);
	/* Event-log records newer than cursor, oldest first, at most max.
	 * cursor is the backend's own text (e.g. record numbers per log),
	 * "" at first start; on return it names the position after the last
	 * record returned, for the caller to persist with those records. */
	int (*read_events)(struct probe *p, char *cursor, size_t cursor_len, size_t max,
			   Exfleet__Event ***events, size_t *n, char *err, size_t errlen);
	/* changed_cb is called, on the loop, whenever the host may have
	 * changed (file or event-log notification, and the periodic rescan). */
	int (*watch)(struct probe *p, void (*changed_cb)(void *arg), void *arg);

	/* Actions. Each returns 0 when it ran (success or a Win32 failure,
	 * told apart by r->win32_error) or negative when it could not run. */
	int (*set_service_credentials)(struct probe *p, const char *service, const char *account,
				       const char *password, struct probe_result *r);
	int (*grant_right)(struct probe *p, const char *account, const char *right,
			   struct probe_result *r);
	/* The rights the account holds, as a malloc'd array of malloc'd strings. */
	int (*account_rights)(struct probe *p, const char *account, char ***rights, size_t *n,
			      struct probe_result *r);
	int (*start_service)(struct probe *p, const char *service, struct probe_result *r);
	int (*stop_service)(struct probe *p, const char *service, struct probe_result *r);
	/* Current state (Exfleet__ServiceState) and Win32 exit code. */
	int (*query_service)(struct probe *p, const char *service, int *state,
			     uint32_t *win32_exit_code, struct probe_result *r);
	int (*verify_credentials)(struct probe *p, const char *account, const char *password,
				  struct probe_result *r);
	/* Runs the configured service-pack installer and waits for it. */
	int (*run_installer)(struct probe *p, const char *path, const char *args,
			     struct probe_result *r);
};

/* The backend registered under name, or NULL. */
const struct probe_backend *probe_backend_find(const char *name);
/* "sim, win32": the names built into this binary, for messages. */
const char *probe_backend_names(void);

#endif
