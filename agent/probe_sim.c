/* The "sim" probe backend: the host is a JSON file (sim_host.h) that
 * exfleet-sim changes as things happen in the field.
 *
 * Reading: read_host and read_events re-read the file only when it was
 * replaced (device, inode, size, mtime, ctime). When the file has become
 * unreadable or invalid, they keep serving the last good state, return 0
 * and say so in err; err is "" when the state is current.
 *
 * Actions read, change and write the file under its lock (sim_host_edit),
 * the same lock exfleet-sim takes, so neither loses the other's change. An
 * action that cannot read the file returns a negative code, with
 * win32_error 2 (no file) or 13 (invalid) and the loader's message.
 *
 * Watching: the file is replaced by rename, so the watch is on its
 * directory, filtered on the file's name, plus a rescan timer as a safety
 * net for file systems without change notification. Linux only, like the
 * flock the actions take. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "probe.h"
#include "sim_host.h"
#include "util.h"

#define RESCAN_MS_DEFAULT 10000

struct file_id {
	uint64_t dev, ino, size;
	int64_t mtime_sec, mtime_nsec, ctime_sec, ctime_nsec;
};

struct probe {
	uv_loop_t *loop;
	char *path;
	char *dir;
	char *base;
	uint64_t rescan_ms;

	struct sim_host *host;       /* last good state */
	struct file_id host_id;
	int host_id_valid;
	int64_t host_read_at_ms;
	struct file_id bad_id;       /* the last bad version seen, to parse it once */
	int bad_id_valid;
	char bad_err[512];

	uv_fs_event_t dir_watch;
	uv_timer_t rescan;
	int handles;                 /* initialised, not yet closed */
	int watching;
	void (*changed_cb)(void *arg);
	void *changed_arg;
	void (*done_cb)(void *arg);
	void *done_arg;
};

static int file_id_read(const char *path, struct file_id *id)
{
	uv_fs_t req;
	int rc = uv_fs_stat(NULL, &req, path, NULL);
	if (rc == 0) {
		const uv_stat_t *st = &req.statbuf;
		*id = (struct file_id){st->st_dev, st->st_ino, st->st_size,
				       st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
				       st->st_ctim.tv_sec, st->st_ctim.tv_nsec};
	}
	uv_fs_req_cleanup(&req);
	return rc;
}

static int file_id_same(const struct file_id *a, const struct file_id *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

/* Brings p->host up to date with the file. 0 with err "" when current; 0
 * with the reason in err when serving the last good state; negative when
 * there is no good state at all. */
static int refresh(struct probe *p, char *err, size_t errlen)
{
	struct file_id id;
	struct sim_host *h = NULL;
	char lerr[512];
	err[0] = '\0';
	int rc = file_id_read(p->path, &id);
	if (rc < 0) {
		snprintf(lerr, sizeof(lerr), "cannot read %s: %s", p->path, uv_strerror(rc));
	} else if (p->host && p->host_id_valid && file_id_same(&id, &p->host_id)) {
		return 0;
	} else if (p->bad_id_valid && file_id_same(&id, &p->bad_id)) {
		snprintf(lerr, sizeof(lerr), "%s", p->bad_err);
		rc = UV_EINVAL;
	} else if ((rc = sim_host_load_file(p->path, &h, lerr, sizeof(lerr))) < 0) {
		p->bad_id = id;
		p->bad_id_valid = 1;
		snprintf(p->bad_err, sizeof(p->bad_err), "%s", lerr);
	}
	if (rc < 0) {
		if (!p->host) {
			snprintf(err, errlen, "%s", lerr);
			return rc;
		}
		char when[32];
		util_format_time(p->host_read_at_ms, when, sizeof(when));
		snprintf(err, errlen, "%s; serving the last good state, read at %s", lerr, when);
		return 0;
	}
	sim_host_free(p->host);
	p->host = h;
	p->host_id = id;
	p->host_id_valid = 1;
	p->bad_id_valid = 0;
	p->host_read_at_ms = util_now_ms();
	return 0;
}

static void probe_free(struct probe *p)
{
	sim_host_free(p->host);
	free(p->path);
	free(p->dir);
	free(p->base);
	free(p);
}

static int sim_open(struct probe **out, uv_loop_t *loop, const struct probe_settings *s, char *err,
		    size_t errlen)
{
	*out = NULL;
	if (!s || !s->host_file || !*s->host_file) {
		snprintf(err, errlen, "probe sim: host_file is not set; name the host's JSON file");
		return UV_EINVAL;
	}
	struct probe *p = calloc(1, sizeof(*p));
	if (!p || !(p->path = strdup(s->host_file)))
		goto oom;
	const char *slash = strrchr(p->path, '/');
	p->dir = slash ? strndup(p->path, slash == p->path ? 1 : (size_t)(slash - p->path))
		       : strdup(".");
	p->base = strdup(slash ? slash + 1 : p->path);
	if (!p->dir || !p->base)
		goto oom;
	p->loop = loop;
	p->rescan_ms = s->rescan_ms ? s->rescan_ms : RESCAN_MS_DEFAULT;
	int rc = refresh(p, err, errlen);
	if (rc < 0) {
		probe_free(p);
		return rc;
	}
	if (loop) {
		uv_fs_event_init(loop, &p->dir_watch);
		uv_timer_init(loop, &p->rescan);
		p->dir_watch.data = p;
		p->rescan.data = p;
		p->handles = 2;
	}
	*out = p;
	return 0;
oom:
	if (p)
		probe_free(p);
	snprintf(err, errlen, "probe sim: out of memory");
	return UV_ENOMEM;
}

static void handle_closed_cb(uv_handle_t *handle)
{
	struct probe *p = handle->data;
	if (--p->handles > 0)
		return;
	void (*done_cb)(void *) = p->done_cb;
	void *arg = p->done_arg;
	probe_free(p);
	if (done_cb)
		done_cb(arg);
}

static void sim_close(struct probe *p, void (*done_cb)(void *arg), void *arg)
{
	if (p->handles == 0) {
		probe_free(p);
		if (done_cb)
			done_cb(arg);
		return;
	}
	p->done_cb = done_cb;
	p->done_arg = arg;
	p->changed_cb = NULL;
	uv_close((uv_handle_t *)&p->dir_watch, handle_closed_cb);
	uv_close((uv_handle_t *)&p->rescan, handle_closed_cb);
}

static int sim_read_host(struct probe *p, Exfleet__Snapshot **out, char *err, size_t errlen)
{
	*out = NULL;
	int rc = refresh(p, err, errlen);
	if (rc < 0)
		return rc;
	if ((rc = sim_host_snapshot(p->host, out)) < 0)
		snprintf(err, errlen, "%s: out of memory building the snapshot", p->path);
	return rc;
}

static int sim_read_events(struct probe *p, char *cursor, size_t cursor_len, size_t max,
			   Exfleet__Event ***events, size_t *n, char *err, size_t errlen)
{
	char note[256];
	*events = NULL;
	*n = 0;
	int rc = refresh(p, err, errlen);
	if (rc < 0)
		return rc;
	rc = sim_host_read_events(p->host, cursor, cursor_len, max, events, n, note, sizeof(note));
	if (rc < 0)
		snprintf(err, errlen, "%s: %s", p->path,
			 rc == UV_EINVAL ? "event cursor buffer too small" : uv_strerror(rc));
	else if (note[0] && !err[0])
		snprintf(err, errlen, "%s", note);
	return rc;
}

static void rescan_cb(uv_timer_t *timer)
{
	struct probe *p = timer->data;
	if (p->changed_cb)
		p->changed_cb(p->changed_arg);
}

static void dir_changed_cb(uv_fs_event_t *handle, const char *filename, int events, int status)
{
	struct probe *p = handle->data;
	(void)events;
	/* The temporary file and the lock file live beside the host file. */
	if (status == 0 && filename && strcmp(filename, p->base) != 0)
		return;
	if (p->changed_cb)
		p->changed_cb(p->changed_arg);
}

static int sim_watch(struct probe *p, void (*changed_cb)(void *arg), void *arg)
{
	if (!p->loop || p->handles == 0)
		return UV_EINVAL;
	p->changed_cb = changed_cb;
	p->changed_arg = arg;
	if (p->watching)
		return 0;
	/* The rescan runs whatever happens to the notification: a system out
	 * of inotify instances (fs.inotify.max_user_instances, 128 by default)
	 * still has its hosts read, only later. */
	uv_timer_start(&p->rescan, rescan_cb, p->rescan_ms, p->rescan_ms);
	p->watching = 1;
	int rc = uv_fs_event_start(&p->dir_watch, dir_changed_cb, p->dir, 0);
	if (rc < 0)
		log_warn("probe sim: cannot watch %s for changes (%s): rescanning every %.1f s "
			 "instead",
			 p->dir, uv_strerror(rc), (double)p->rescan_ms / 1000);
	return 0;
}

/* ---- actions ---- */

enum action_op {
	ACT_SET_CREDENTIALS,
	ACT_GRANT_RIGHT,
	ACT_ACCOUNT_RIGHTS,
	ACT_START,
	ACT_STOP,
	ACT_QUERY,
	ACT_VERIFY,
	ACT_INSTALL,
};

struct action {
	enum action_op op;
	const char *service, *account, *password, *right, *path, *args;
	uint32_t code;
	char **rights;
	size_t n_rights;
	int state;
	uint32_t exit_code;
};

/* 0: save the host; 1: nothing changed. */
static int action_cb(struct sim_host *h, void *arg)
{
	struct action *a = arg;
	const struct sim_service *s;
	switch (a->op) {
	case ACT_SET_CREDENTIALS:
		a->code = sim_host_set_service_credentials(h, a->service, a->account, a->password);
		return a->code ? 1 : 0;
	case ACT_GRANT_RIGHT:
		a->code = sim_host_grant_right(h, a->account, a->right);
		return a->code ? 1 : 0;
	case ACT_ACCOUNT_RIGHTS:
		a->code = sim_host_account_rights(h, a->account, &a->rights, &a->n_rights);
		return 1;
	case ACT_START:
		a->code = sim_host_start_service(h, a->service);
		/* A failed start changes state and logs events too. */
		return a->code == WIN32_SERVICE_DOES_NOT_EXIST ||
		       a->code == WIN32_SERVICE_ALREADY_RUNNING || a->code == WIN32_NOT_ENOUGH_MEMORY;
	case ACT_STOP:
		a->code = sim_host_stop_service(h, a->service);
		return a->code ? 1 : 0;
	case ACT_QUERY:
		s = sim_host_find_service(h, a->service);
		a->code = s ? 0 : WIN32_SERVICE_DOES_NOT_EXIST;
		if (s) {
			a->state = sim_state_wire(s->state);
			a->exit_code = s->win32_exit_code;
		}
		return 1;
	case ACT_VERIFY:
		a->code = sim_host_verify_credentials(h, a->account, a->password);
		return 1;
	case ACT_INSTALL:
		a->code = sim_host_run_installer(h, a->path, a->args);
		return a->code ? 1 : 0;
	}
	return 1;
}

/* subject names what the action acted on, for the message. */
static int run_action(struct probe *p, struct action *a, const char *subject,
		      struct probe_result *r)
{
	char err[512];
	int rc = sim_host_edit(p->path, action_cb, a, err, sizeof(err));
	p->host_id_valid = 0; /* read the file again rather than trust its stat */
	if (rc < 0) {
		probe_result_set(r, rc == UV_ENOENT ? WIN32_FILE_NOT_FOUND : WIN32_INVALID_DATA, "%s",
				 err);
		return rc;
	}
	if (a->code)
		probe_result_set(r, a->code, "%s: %s", subject, winerr_text(a->code));
	else
		probe_result_set(r, 0, NULL);
	return 0;
}

static int sim_set_service_credentials(struct probe *p, const char *service, const char *account,
				       const char *password, struct probe_result *r)
{
	struct action a = {.op = ACT_SET_CREDENTIALS, .service = service, .account = account,
			   .password = password};
	int rc = run_action(p, &a, service, r);
	if (rc == 0 && a.code == WIN32_NONE_MAPPED)
		probe_result_set(r, a.code, "%s: %s", account, winerr_text(a.code));
	return rc;
}

static int sim_grant_right(struct probe *p, const char *account, const char *right,
			   struct probe_result *r)
{
	struct action a = {.op = ACT_GRANT_RIGHT, .account = account, .right = right};
	int rc = run_action(p, &a, account, r);
	if (rc == 0 && a.code == WIN32_NO_SUCH_PRIVILEGE)
		probe_result_set(r, a.code, "%s: %s", right, winerr_text(a.code));
	return rc;
}

static int sim_account_rights(struct probe *p, const char *account, char ***rights, size_t *n,
			      struct probe_result *r)
{
	struct action a = {.op = ACT_ACCOUNT_RIGHTS, .account = account};
	*rights = NULL;
	*n = 0;
	int rc = run_action(p, &a, account, r);
	if (rc == 0) {
		*rights = a.rights;
		*n = a.n_rights;
	}
	return rc;
}

static int sim_start_service(struct probe *p, const char *service, struct probe_result *r)
{
	struct action a = {.op = ACT_START, .service = service};
	return run_action(p, &a, service, r);
}

static int sim_stop_service(struct probe *p, const char *service, struct probe_result *r)
{
	struct action a = {.op = ACT_STOP, .service = service};
	return run_action(p, &a, service, r);
}

static int sim_query_service(struct probe *p, const char *service, int *state,
			     uint32_t *win32_exit_code, struct probe_result *r)
{
	struct action a = {.op = ACT_QUERY, .service = service};
	int rc = run_action(p, &a, service, r);
	*state = a.state;
	*win32_exit_code = a.exit_code;
	return rc;
}

static int sim_verify_credentials(struct probe *p, const char *account, const char *password,
				  struct probe_result *r)
{
	struct action a = {.op = ACT_VERIFY, .account = account, .password = password};
	return run_action(p, &a, account, r);
}

static int sim_run_installer(struct probe *p, const char *path, const char *args,
			     struct probe_result *r)
{
	struct action a = {.op = ACT_INSTALL, .path = path, .args = args};
	return run_action(p, &a, path && *path ? path : "(no installer configured)", r);
}

const struct probe_backend probe_sim_backend = {
	.name = "sim",
	.open = sim_open,
	.close = sim_close,
	.read_host = sim_read_host,
	.read_events = sim_read_events,
	.watch = sim_watch,
	.set_service_credentials = sim_set_service_credentials,
	.grant_right = sim_grant_right,
	.account_rights = sim_account_rights,
	.start_service = sim_start_service,
	.stop_service = sim_stop_service,
	.query_service = sim_query_service,
	.verify_credentials = sim_verify_credentials,
	.run_installer = sim_run_installer,
};
