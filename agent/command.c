#include "command.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "log.h"
#include "sign.h"
#include "util.h"

#define POLL_MS 250
/* A PEM ECDSA P-256 or Ed25519 key is a few hundred bytes. Staying below
 * util_read_file's first buffer means it never reallocates, so no unwiped
 * copy of the certificate key is left in freed memory. */
#define CERT_KEY_FILE_MAX 4000

/* The steps of one command, in the order they ran. */
struct step_list {
	Exfleet__StepResult **v;
	size_t n;
	int failed;
};

struct restart_plan {
	char id[COMMAND_ID_MAX + 1];
	int64_t started_ms, deadline_ms;
	char **order;           /* start order; stopped in reverse */
	size_t n;
	size_t done;            /* services finished in the current phase */
	int stopping;           /* phase: 1 stop, 0 start */
	int requested;          /* the current service's stop/start was issued */
	struct step_list steps;
};

/* ---- the replay cache: ids seen, kept until their command expires ---- */

static int replay_save(struct commands *cmds)
{
	size_t cap = cmds->nseen * (COMMAND_ID_MAX + 24) + 1;
	char *text = malloc(cap);
	if (!text)
		return UV_ENOMEM;
	size_t used = 0;
	for (size_t i = 0; i < cmds->nseen; i++)
		used += (size_t)snprintf(text + used, cap - used, "%s %lld\n", cmds->seen[i].id,
					 (long long)cmds->seen[i].expires_ms);
	char err[256];
	int rc = util_write_file_atomic(cmds->replay_path, text, used, 0600, err, sizeof(err));
	if (rc < 0)
		log_err("replay cache: %s", err);
	free(text);
	return rc;
}

static int replay_seen(const struct commands *cmds, const char *id)
{
	for (size_t i = 0; i < cmds->nseen; i++)
		if (strcmp(cmds->seen[i].id, id) == 0)
			return 1;
	return 0;
}

/* Records id before the command runs, so a crash never runs it twice, and
 * forgets ids whose commands can no longer be accepted anyway. */
static int replay_add(struct commands *cmds, const char *id, int64_t expires_ms)
{
	int64_t now = util_now_ms();
	size_t kept = 0;
	for (size_t i = 0; i < cmds->nseen; i++)
		if (cmds->seen[i].expires_ms + (int64_t)cmds->cfg->clock_skew_ms >= now)
			cmds->seen[kept++] = cmds->seen[i];
	cmds->nseen = kept;
	if (cmds->nseen == cmds->capseen) {
		size_t cap = cmds->capseen ? cmds->capseen * 2 : 64;
		struct replay_entry *grown = realloc(cmds->seen, cap * sizeof(*grown));
		if (!grown)
			return UV_ENOMEM;
		cmds->seen = grown;
		cmds->capseen = cap;
	}
	struct replay_entry *e = &cmds->seen[cmds->nseen++];
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->expires_ms = expires_ms;
	return replay_save(cmds);
}

static int replay_load(struct commands *cmds, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len;
	int rc = util_read_file(cmds->replay_path, 4u << 20, &text, &len, err, errlen);
	if (rc == UV_ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	int line = 0;
	for (char *p = text, *nl; *p; p = nl + 1) {
		nl = strchr(p, '\n');
		if (!nl)
			nl = p + strlen(p) - 1;
		line++;
		char id[COMMAND_ID_MAX + 1];
		long long expires;
		if (sscanf(p, "%64s %lld", id, &expires) != 2) {
			snprintf(err, errlen, "%s:%d: not 'ID EXPIRES_MS'; remove the file to reset it",
				 cmds->replay_path, line);
			free(text);
			return UV_EINVAL;
		}
		if (cmds->nseen == cmds->capseen) {
			size_t cap = cmds->capseen ? cmds->capseen * 2 : 64;
			struct replay_entry *grown = realloc(cmds->seen, cap * sizeof(*grown));
			if (!grown) {
				free(text);
				return UV_ENOMEM;
			}
			cmds->seen = grown;
			cmds->capseen = cap;
		}
		snprintf(cmds->seen[cmds->nseen].id, COMMAND_ID_MAX + 1, "%s", id);
		cmds->seen[cmds->nseen++].expires_ms = expires;
	}
	free(text);
	return 0;
}

/* ---- results ---- */

static void steps_add(struct step_list *steps, const char *step, const char *target, int ok,
		      uint32_t win32_error, const char *message)
{
	Exfleet__StepResult **grown = realloc(steps->v, (steps->n + 1) * sizeof(*steps->v));
	Exfleet__StepResult *sr = calloc(1, sizeof(*sr));
	if (!grown || !sr) {
		free(sr);
		if (grown)
			steps->v = grown;
		steps->failed = 1;
		return;
	}
	steps->v = grown;
	exfleet__step_result__init(sr);
	sr->step = strdup(step);
	sr->target = strdup(target);
	sr->ok = ok;
	sr->win32_error = win32_error;
	sr->message = strdup(message);
	sr->finished_at_ms = util_now_ms();
	steps->v[steps->n++] = sr;
	if (!ok)
		steps->failed = 1;
}

/* A step from what the probe said (rc < 0: the call could not run); done is
 * the message of a success the probe did not describe. Returns whether the
 * step succeeded. */
static int steps_add_probe(struct step_list *steps, const char *step, const char *target, int rc,
			   const struct probe_result *r, const char *done)
{
	char text[300];
	if (r->win32_error) {
		steps_add(steps, step, target, 0, r->win32_error,
			  r->message[0] ? r->message : winerr_text(r->win32_error));
		return 0;
	}
	if (rc < 0) {
		snprintf(text, sizeof(text), "the probe could not run it: %s",
			 r->message[0] ? r->message : uv_strerror(rc));
		steps_add(steps, step, target, 0, 0, text);
		return 0;
	}
	steps_add(steps, step, target, 1, 0, r->message[0] ? r->message : done);
	return 1;
}

static void steps_free(struct step_list *steps)
{
	for (size_t i = 0; i < steps->n; i++)
		exfleet__step_result__free_unpacked(steps->v[i], NULL);
	free(steps->v);
	steps->v = NULL;
	steps->n = 0;
}

/* "step target: code text" of the first failed step ("step target: text"
 * when no Win32 error was involved). */
static void steps_reason(const struct step_list *steps, char *reason, size_t len)
{
	reason[0] = '\0';
	for (size_t i = 0; i < steps->n; i++) {
		const Exfleet__StepResult *sr = steps->v[i];
		if (sr->ok)
			continue;
		if (sr->win32_error)
			snprintf(reason, len, "%s %s: %u %s", sr->step, sr->target, sr->win32_error,
				 sr->message);
		else
			snprintf(reason, len, "%s %s: %s", sr->step, sr->target, sr->message);
		return;
	}
	if (steps->failed)
		snprintf(reason, len, "out of memory recording the steps");
}

/* Spools the result of command id and tells the session. */
static void spool_result(struct commands *cmds, const char *id, Exfleet__CommandStatus status,
			 const char *reason, Exfleet__StepResult **steps, size_t nsteps,
			 int64_t started_ms)
{
	Exfleet__CommandResult r = EXFLEET__COMMAND_RESULT__INIT;
	struct spool *spool = cmds->collect->spool;
	r.sequence = spool_next_sequence(spool);
	r.command_id = (char *)id;
	r.status = status;
	r.reason = (char *)(reason ? reason : "");
	r.steps = steps;
	r.n_steps = nsteps;
	r.started_at_ms = started_ms;
	r.finished_at_ms = util_now_ms();
	size_t len = exfleet__command_result__get_packed_size(&r);
	uint8_t *buf = malloc(len ? len : 1);
	char err[256];
	if (!buf) {
		log_err("command %s: out of memory for its result", id);
		return;
	}
	exfleet__command_result__pack(&r, buf);
	if (spool_append(spool, SPOOL_RESULT, buf, len, NULL, NULL, err, sizeof(err)) < 0 ||
	    spool_sync(spool, err, sizeof(err)) < 0)
		log_err("command %s: cannot spool its result: %s", id, err);
	free(buf);
	log_info("command %s: %s%s%s", id,
		 status == EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED  ? "succeeded"
		 : status == EXFLEET__COMMAND_STATUS__COMMAND_REJECTED ? "rejected"
		 : status == EXFLEET__COMMAND_STATUS__COMMAND_EXPIRED  ? "expired"
								       : "failed",
		 reason && reason[0] ? ": " : "", reason ? reason : "");
	if (cmds->result_cb)
		cmds->result_cb(cmds->arg);
}

static void reject(struct commands *cmds, const char *id, int64_t started_ms, const char *fmt,
		   ...) LOG_PRINTF(4, 5);

/* Answers a command that will not run, with the reason. */
static void reject(struct commands *cmds, const char *id, int64_t started_ms, const char *fmt, ...)
{
	char reason[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	spool_result(cmds, id, EXFLEET__COMMAND_STATUS__COMMAND_REJECTED, reason, NULL, 0,
		     started_ms);
}

/* Answers a command that ran: FAILED with its first failed step as the
 * reason, else SUCCEEDED. changed: the command may have changed the host,
 * so the next collection reports the host whatever the last snapshot was. */
static void finish(struct commands *cmds, const char *id, struct step_list *steps,
		   int64_t started_ms, int changed)
{
	char reason[400];
	steps_reason(steps, reason, sizeof(reason));
	if (changed)
		collect_forget_snapshot(cmds->collect);
	spool_result(cmds, id,
		     steps->failed ? EXFLEET__COMMAND_STATUS__COMMAND_FAILED
				   : EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED,
		     reason, steps->v, steps->n, started_ms);
}

/* ---- names as Windows compares them ---- */

/* ASCII without case: service, account, right and action names. */
static int name_same(const char *a, const char *b)
{
	while (*a && tolower((unsigned char)*a) == tolower((unsigned char)*b)) {
		a++;
		b++;
	}
	return *a == '\0' && *b == '\0';
}

/* The name of a local account (".\name", "COMPUTER\name" or a bare name),
 * NULL for any other. */
static const char *local_name(const char *account, const char *computer)
{
	const char *bs = strchr(account, '\\');
	if (!bs)
		return account;
	size_t len = (size_t)(bs - account);
	if (len == 1 && account[0] == '.')
		return bs + 1;
	if (!computer || strlen(computer) != len)
		return NULL;
	for (size_t i = 0; i < len; i++)
		if (tolower((unsigned char)account[i]) != tolower((unsigned char)computer[i]))
			return NULL;
	return bs + 1;
}

/* Windows writes a local account back as ".\name" whatever it was given. */
static int account_same(const char *a, const char *b, const char *computer)
{
	if (name_same(a, b))
		return 1;
	const char *la = local_name(a, computer), *lb = local_name(b, computer);
	return la && lb && name_same(la, lb);
}

/* ---- RESTART_SERVICES: stop in reverse dependency order, start in order ---- */

static void plan_free(struct restart_plan *plan)
{
	for (size_t i = 0; i < plan->n; i++)
		free(plan->order[i]);
	free(plan->order);
	steps_free(&plan->steps);
	free(plan);
}

static const Exfleet__Service *find_service(const Exfleet__Snapshot *snap, const char *name)
{
	for (size_t i = 0; i < snap->n_services; i++)
		if (name_same(snap->services[i]->name, name))
			return snap->services[i];
	return NULL;
}

static int in_list(char **list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (name_same(list[i], name))
			return 1;
	return 0;
}
/* Orders names so that each comes after the services it depends on. */
static int order_services(struct restart_plan *plan, const Exfleet__Snapshot *snap,
			  char **names, size_t n)
{
	plan->order = calloc(n ? n : 1, sizeof(char *));
	if (!plan->order)
		return UV_ENOMEM;
	while (plan->n < n) {
		size_t before = plan->n;
		for (size_t i = 0; i < n; i++) {
			if (in_list(plan->order, plan->n, names[i]))
				continue;
			const Exfleet__Service *svc = find_service(snap, names[i]);
			int ready = 1;
			for (size_t d = 0; svc && d < svc->n_dependencies; d++)
				if (in_list(names, n, svc->dependencies[d]) &&
				    !in_list(plan->order, plan->n, svc->dependencies[d]))
					ready = 0;
			if (ready)
				plan->order[plan->n++] = strdup(names[i]);
		}
		if (plan->n == before)
			return UV_ELOOP; /* a dependency cycle */
	}
	return 0;
}

/* names plus every running service that depends on one of them, directly or
 * not; the strings stay owned by their messages. */
static int with_dependents(const Exfleet__Snapshot *snap, char **names, size_t n, char ***out,
			   size_t *nout)
{
	char **set = malloc((n + snap->n_services) * sizeof(char *));
	if (!set)
		return UV_ENOMEM;
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		if (!in_list(set, count, names[i]))
			set[count++] = names[i];
	for (size_t grew = 1; grew;) {
		grew = 0;
		for (size_t i = 0; i < snap->n_services; i++) {
			const Exfleet__Service *svc = snap->services[i];
			if (svc->state == EXFLEET__SERVICE_STATE__SERVICE_STOPPED ||
			    in_list(set, count, svc->name))
				continue;
			for (size_t d = 0; d < svc->n_dependencies; d++)
				if (in_list(set, count, svc->dependencies[d])) {
					set[count++] = svc->name;
					grew = 1;
					break;
				}
		}
	}
	*out = set;
	*nout = count;
	return 0;
}

static void restart_finish(struct commands *cmds);

static void restart_tick(struct commands *cmds)
{
	struct restart_plan *plan = cmds->running;
	const struct probe_backend *b = cmds->collect->backend;
	struct probe *p = cmds->collect->probe;
	while (!plan->steps.failed && plan->done < plan->n) {
		const char *name = plan->stopping ? plan->order[plan->n - 1 - plan->done]
						  : plan->order[plan->done];
		struct probe_result r = {0};
		int state = 0;
		uint32_t exit_code = 0;
		if (!plan->requested) {
			if (plan->stopping)
				b->stop_service(p, name, &r);
			else
				b->start_service(p, name, &r);
			plan->requested = 1;
			/* Stopping a stopped service is fine; anything else stops the plan. */
			if (r.win32_error &&
			    !(plan->stopping && r.win32_error == WIN32_SERVICE_NOT_ACTIVE)) {
				steps_add(&plan->steps, plan->stopping ? "stop" : "start", name, 0,
					  r.win32_error,
					  r.message[0] ? r.message : winerr_text(r.win32_error));
				break;
			}
		}
		b->query_service(p, name, &state, &exit_code, &r);
		int want = plan->stopping ? EXFLEET__SERVICE_STATE__SERVICE_STOPPED
					  : EXFLEET__SERVICE_STATE__SERVICE_RUNNING;
		if (state == want) {
			steps_add(&plan->steps, plan->stopping ? "stop" : "start", name, 1, 0,
				 plan->stopping ? "stopped" : "running");
		} else if (!plan->stopping && state == EXFLEET__SERVICE_STATE__SERVICE_STOPPED) {
			steps_add(&plan->steps, "start", name, 0, exit_code,
				  winerr_text(exit_code));
			break;
		} else if (util_now_ms() > plan->deadline_ms) {
			steps_add(&plan->steps, plan->stopping ? "stop" : "start", name, 0,
				 WIN32_SERVICE_REQUEST_TIMEOUT,
				 winerr_text(WIN32_SERVICE_REQUEST_TIMEOUT));
			break;
		} else {
			return; /* poll again */
		}
		plan->requested = 0;
		if (++plan->done == plan->n && plan->stopping) {
			plan->stopping = 0;
			plan->done = 0;
		}
	}
	restart_finish(cmds);
}

static void poll_cb(uv_timer_t *t)
{
	struct commands *cmds = t->data;
	if (cmds->running)
		restart_tick(cmds);
}

static void run_next(struct commands *cmds);

static void restart_finish(struct commands *cmds)
{
	struct restart_plan *plan = cmds->running;
	uv_timer_stop(&cmds->timer);
	/* What the restart left behind goes out too. */
	finish(cmds, plan->id, &plan->steps, plan->started_ms, 1);
	cmds->running = NULL;
	plan_free(plan);
	run_next(cmds);
}

static void restart_start(struct commands *cmds, const Exfleet__CommandBody *body)
{
	const Exfleet__RestartServices *rs = body->restart_services;
	struct restart_plan *plan = calloc(1, sizeof(*plan));
	if (!plan) {
		spool_result(cmds, body->id, EXFLEET__COMMAND_STATUS__COMMAND_FAILED, "out of memory",
			     NULL, 0, util_now_ms());
		return;
	}
	snprintf(plan->id, sizeof(plan->id), "%s", body->id);
	plan->started_ms = util_now_ms();
	uint64_t timeout = rs->timeout_s ? (uint64_t)rs->timeout_s * 1000
					 : cmds->cfg->restart_timeout_ms;
	plan->deadline_ms = plan->started_ms + (int64_t)timeout;
	plan->stopping = 1;

	Exfleet__Snapshot *snap = NULL;
	char err[256] = "";
	const char *problem = NULL;
	if (cmds->collect->backend->read_host(cmds->collect->probe, &snap, err, sizeof(err)) < 0 ||
	    !snap)
		problem = err[0] ? err : "cannot read the host";
	for (size_t i = 0; !problem && i < rs->n_services; i++)
		if (!find_service(snap, rs->services[i])) {
			steps_add(&plan->steps, "restart", rs->services[i], 0,
				  WIN32_SERVICE_DOES_NOT_EXIST,
				  winerr_text(WIN32_SERVICE_DOES_NOT_EXIST));
			problem = "unknown service";
		}
	if (!problem && rs->n_services == 0)
		problem = "no services named";
	/* Windows refuses to stop a service that running services depend on
	 * (1051), so those are restarted with it, as "net stop /y" would. */
	char **names = NULL;
	size_t n = 0;
	if (!problem && with_dependents(snap, rs->services, rs->n_services, &names, &n) < 0)
		problem = "out of memory";
	if (!problem && order_services(plan, snap, names, n) < 0)
		problem = "the services' dependencies form a cycle";
	free(names);
	if (snap)
		exfleet__snapshot__free_unpacked(snap, NULL);
	cmds->running = plan;
	if (problem) {
		if (plan->steps.n == 0)
			steps_add(&plan->steps, "restart", "", 0, 0, problem);
		plan->steps.failed = 1;
		restart_finish(cmds);
		return;
	}
	uv_timer_start(&cmds->timer, poll_cb, POLL_MS, POLL_MS);
	restart_tick(cmds);
}

/* ---- the actions that run at once ---- */

/* Opens the password sealed to this agent for command id. On failure the
 * reason is seal_open's, or says what is malformed, and nothing is kept. */
static int password_open(struct commands *cmds, const char *id, const Exfleet__SealedSecret *sealed,
			 uint8_t **password, size_t *len, char *reason, size_t reasonlen)
{
	*password = NULL;
	*len = 0;
	if (!sealed) {
		snprintf(reason, reasonlen, "malformed: no sealed password");
		return UV_EINVAL;
	}
	int rc = seal_open(cmds->seal_key, cmds->cfg->host_id, id, sealed, password, len, reason,
			   reasonlen);
	if (rc < 0)
		return rc;
	/* The probe takes a C string: a NUL inside would cut it short. */
	if (memchr(*password, '\0', *len)) {
		seal_free_secret(*password, *len);
		*password = NULL;
		*len = 0;
		snprintf(reason, reasonlen, "malformed: the sealed password holds a NUL byte");
		return UV_EINVAL;
	}
	return 0;
}

static void verify_run(struct commands *cmds, const Exfleet__CommandBody *body, int64_t started_ms)
{
	const Exfleet__VerifyCredentials *vc = body->verify_credentials;
	struct step_list steps = {0};
	struct probe_result r = {0};
	uint8_t *password = NULL;
	size_t len = 0;
	char reason[300];
	int rc;

	if (!vc || !vc->account[0]) {
		reject(cmds, body->id, started_ms,
		       "malformed: VERIFY_CREDENTIALS names no account");
		goto out;
	}
	rc = password_open(cmds, body->id, vc->password, &password, &len, reason, sizeof(reason));
	if (rc < 0) {
		reject(cmds, body->id, started_ms, "%s", reason);
		goto out;
	}
	rc = cmds->collect->backend->verify_credentials(cmds->collect->probe, vc->account,
							(const char *)password, &r);
	seal_free_secret(password, len);
	password = NULL;
	len = 0;
	if (rc == 0 && r.win32_error == WIN32_LOGON_TYPE_NOT_GRANTED) {
		/* Windows refuses the logon type only after accepting the
		 * password, and dcpromo takes the right away: granting it is
		 * the repair's next step, not a reason to stop here. */
		snprintf(reason, sizeof(reason),
			 "password accepted; %s lacks SeServiceLogonRight (1385), which "
			 "GRANT_RIGHTS restores",
			 vc->account);
		steps_add(&steps, "verify-credentials", vc->account, 1, r.win32_error, reason);
	} else {
		steps_add_probe(&steps, "verify-credentials", vc->account, rc, &r,
				"service logon accepted");
	}
	finish(cmds, body->id, &steps, started_ms, 0);
out:
	seal_free_secret(password, len);
	steps_free(&steps);
}

/* The allowlist's spelling of right, or NULL when it may not be granted. */
static const char *right_allowed(const struct agent_config *cfg, const char *right)
{
	for (size_t i = 0; i < cfg->allowed_rights.count; i++)
		if (name_same(cfg->allowed_rights.items[i], right))
			return cfg->allowed_rights.items[i];
	return NULL;
}

static void grant_run(struct commands *cmds, const Exfleet__CommandBody *body, int64_t started_ms)
{
	const Exfleet__GrantRights *gr = body->grant_rights;
	const struct probe_backend *b = cmds->collect->backend;
	struct probe *p = cmds->collect->probe;
	struct step_list steps = {0};
	struct probe_result r = {0}, refused = {0};
	const char **rights = NULL;
	char **held = NULL, text[300];
	size_t nheld = 0, granted = 0;
	int rc = 0, refused_rc = 0, grant_failed = 0;

	if (!gr || !gr->account[0] || gr->n_rights == 0) {
		reject(cmds, body->id, started_ms, "malformed: GRANT_RIGHTS names no %s",
		       gr && gr->account[0] ? "rights" : "account");
		goto out;
	}
	rights = calloc(gr->n_rights, sizeof(*rights));
	if (!rights) {
		spool_result(cmds, body->id, EXFLEET__COMMAND_STATUS__COMMAND_FAILED,
			     "out of memory", NULL, 0, started_ms);
		goto out;
	}
	/* All or none: one right outside the allowlist refuses the command
	 * before anything is granted. */
	for (size_t i = 0; i < gr->n_rights; i++) {
		rights[i] = right_allowed(cmds->cfg, gr->rights[i]);
		if (!rights[i]) {
			reject(cmds, body->id, started_ms,
			       "not allowed: %s is not in [commands] allowed_rights",
			       gr->rights[i]);
			goto out;
		}
	}
	for (granted = 0; granted < gr->n_rights; granted++) {
		memset(&refused, 0, sizeof(refused));
		refused_rc = b->grant_right(p, gr->account, rights[granted], &refused);
		if (refused_rc < 0 || refused.win32_error) {
			grant_failed = 1;
			break;
		}
	}
	/* The API's word is not proof: read back what the account holds. */
	if (granted > 0) {
		rc = b->account_rights(p, gr->account, &held, &nheld, &r);
		if (rc < 0 || r.win32_error) {
			snprintf(text, sizeof(text),
				 "granted, but re-reading the rights of %s failed: %s", gr->account,
				 r.message[0] ? r.message : uv_strerror(rc));
			steps_add(&steps, "grant-rights", gr->account, 0, r.win32_error, text);
		} else {
			for (size_t i = 0; i < granted; i++) {
				int holds = in_list(held, nheld, rights[i]);
				snprintf(text, sizeof(text), "%s: %s", gr->account,
					 holds ? "granted; held on re-read"
					       : "granted but not held on re-read");
				steps_add(&steps, "grant-rights", rights[i], holds, 0, text);
			}
		}
	}
	if (grant_failed)
		steps_add_probe(&steps, "grant-rights", rights[granted], refused_rc, &refused, "");
	finish(cmds, body->id, &steps, started_ms, 1);
out:
	for (size_t i = 0; i < nheld; i++)
		free(held[i]);
	free(held);
	free(rights);
	steps_free(&steps);
}

/* Re-reads the host after service was set: it must now log on as account.
 * Returns whether it does. */
static int confirm_logon(struct commands *cmds, struct step_list *steps, const char *service,
			 const char *account)
{
	Exfleet__Snapshot *snap = NULL;
	const Exfleet__Service *svc;
	char err[256] = "", text[400];
	int ok = 0;
	int rc = cmds->collect->backend->read_host(cmds->collect->probe, &snap, err, sizeof(err));
	/* A backend serving its last good state says so in err: that state
	 * predates the change and proves nothing. */
	if (rc < 0 || !snap || err[0]) {
		snprintf(text, sizeof(text), "set, but re-reading the host failed: %s",
			 err[0] ? err : "no state");
		steps_add(steps, "set-service-credentials", service, 0, 0, text);
	} else if (!(svc = find_service(snap, service))) {
		steps_add(steps, "set-service-credentials", service, 0,
			  WIN32_SERVICE_DOES_NOT_EXIST, "set, but the service is gone on re-read");
	} else if (!account_same(svc->logon_account, account, snap->computer_name)) {
		snprintf(text, sizeof(text), "set, but the service logs on as '%s', not '%s'",
			 svc->logon_account, account);
		steps_add(steps, "set-service-credentials", service, 0, 0, text);
	} else {
		snprintf(text, sizeof(text),
			 "logs on as %s on re-read (a password cannot be read back)",
			 svc->logon_account);
		steps_add(steps, "set-service-credentials", service, 1, 0, text);
		ok = 1;
	}
	if (snap)
		exfleet__snapshot__free_unpacked(snap, NULL);
	return ok;
}

static void set_credentials_run(struct commands *cmds, const Exfleet__CommandBody *body,
				int64_t started_ms)
{
	const Exfleet__SetServiceCredentials *sc = body->set_service_credentials;
	struct step_list steps = {0};
	uint8_t *password = NULL;
	size_t len = 0;
	char reason[300];
	int changed = 0, rc;

	if (!sc || !sc->account[0] || sc->n_services == 0) {
		reject(cmds, body->id, started_ms, "malformed: SET_SERVICE_CREDENTIALS names no %s",
		       sc && sc->account[0] ? "services" : "account");
		goto out;
	}
	rc = password_open(cmds, body->id, sc->password, &password, &len, reason, sizeof(reason));
	if (rc < 0) {
		reject(cmds, body->id, started_ms, "%s", reason);
		goto out;
	}
	/* The first failure stops: a half-done repair is reported as such,
	 * and services after it keep the account they worked with. */
	for (size_t i = 0; i < sc->n_services; i++) {
		struct probe_result r = {0};
		changed = 1;
		rc = cmds->collect->backend->set_service_credentials(
			cmds->collect->probe, sc->services[i], sc->account, (const char *)password,
			&r);
		if (rc < 0 || r.win32_error) {
			steps_add_probe(&steps, "set-service-credentials", sc->services[i], rc, &r,
					"");
			break;
		}
		if (!confirm_logon(cmds, &steps, sc->services[i], sc->account))
			break;
	}
	seal_free_secret(password, len);
	password = NULL;
	len = 0;
	finish(cmds, body->id, &steps, started_ms, changed);
out:
	seal_free_secret(password, len);
	steps_free(&steps);
}

static void reapply_run(struct commands *cmds, const Exfleet__CommandBody *body, int64_t started_ms)
{
	const char *installer = cmds->cfg->service_pack_installer;
	const char *args = cmds->cfg->service_pack_args ? cmds->cfg->service_pack_args : "";
	struct step_list steps = {0};
	struct probe_result r = {0};

	/* Only what this host's own config names runs: a command cannot say
	 * what to execute. */
	if (!installer || !installer[0]) {
		reject(cmds, body->id, started_ms,
		       "not enabled: no [commands] service_pack_installer configured");
		return;
	}
	log_info("command %s: running %s %s", body->id, installer, args);
	int rc = cmds->collect->backend->run_installer(cmds->collect->probe, installer, args, &r);
	steps_add_probe(&steps, "reapply-service-pack", installer, rc, &r,
			"installer exited with 0");
	finish(cmds, body->id, &steps, started_ms, 1);
	steps_free(&steps);
}

/* ---- receiving ---- */

static const char *action_name(Exfleet__CommandBody__ActionCase a)
{
	switch (a) {
	case EXFLEET__COMMAND_BODY__ACTION_SET_SERVICE_CREDENTIALS:
		return "SET_SERVICE_CREDENTIALS";
	case EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS:
		return "GRANT_RIGHTS";
	case EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES:
		return "RESTART_SERVICES";
	case EXFLEET__COMMAND_BODY__ACTION_VERIFY_CREDENTIALS:
		return "VERIFY_CREDENTIALS";
	case EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK:
		return "REAPPLY_SERVICE_PACK";
	case EXFLEET__COMMAND_BODY__ACTION_RESCAN:
		return "RESCAN";
	default:
		return "no action";
	}
}

/* [commands] enabled names actions in lower case: "grant_rights". */
static int action_enabled(const struct agent_config *cfg, const char *action)
{
	for (size_t i = 0; i < cfg->commands_enabled.count; i++)
		if (name_same(cfg->commands_enabled.items[i], action))
			return 1;
	return 0;
}

/* Runs one command, or answers why it will not run. Only commands signed
 * by an operator of the deployment's CA run (sign_verify_command checks the
 * chain, revocation, role, signature, target and validity window); each
 * refusal is answered with its reason, by the id the command claims, so the
 * collector's record and audit show it. */
static void execute(struct commands *cmds, Exfleet__Command *cmd)
{
	int64_t now = util_now_ms();
	char reason[256], operator[SIGN_OPERATOR_MAX] = "";
	Exfleet__CommandBody *body = NULL;
	int rc = sign_verify_command(cmds->verifier, cmd, cmds->cfg->host_id, now,
				     (int64_t)cmds->cfg->clock_skew_ms, &body, operator, reason,
				     sizeof(reason));
	if (rc < 0) {
		Exfleet__CommandBody *claimed =
			exfleet__command_body__unpack(NULL, cmd->body.len, cmd->body.data);
		if (claimed && sign_command_id_valid(claimed->id)) {
			log_warn("command %s refused: %s%s%s", claimed->id, reason,
				 operator[0] ? "; signed by " : "", operator);
			spool_result(cmds, claimed->id,
				     rc == UV_ETIMEDOUT ? EXFLEET__COMMAND_STATUS__COMMAND_EXPIRED
							: EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
				     reason, NULL, 0, now);
		} else {
			log_warn("command refused, with no id to answer by: %s", reason);
		}
		if (claimed)
			exfleet__command_body__free_unpacked(claimed, NULL);
		goto out;
	}
	if (replay_seen(cmds, body->id)) {
		spool_result(cmds, body->id, EXFLEET__COMMAND_STATUS__COMMAND_REJECTED,
			     "command id already seen (replay)", NULL, 0, now);
		goto out;
	}
	if (replay_add(cmds, body->id, body->expires_at_ms) < 0) {
		spool_result(cmds, body->id, EXFLEET__COMMAND_STATUS__COMMAND_FAILED,
			     "cannot record the command id in the replay cache", NULL, 0, now);
		goto out;
	}
	const char *action = action_name(body->action_case);
	if (cmd->batch_size > 1)
		log_info("command %s: %s, signed by %s with %u others", body->id, action, operator,
			 cmd->batch_size - 1);
	else
		log_info("command %s: %s, signed by %s", body->id, action, operator);
	if (body->action_case == EXFLEET__COMMAND_BODY__ACTION__NOT_SET) {
		reject(cmds, body->id, now,
		       "malformed: the command names no action this agent knows");
		goto out;
	}
	if (!action_enabled(cmds->cfg, action)) {
		reject(cmds, body->id, now, "not enabled: %s is disabled in [commands] enabled",
		       action);
		goto out;
	}
	switch (body->action_case) {
	case EXFLEET__COMMAND_BODY__ACTION_RESCAN:
		collect_forget_snapshot(cmds->collect);
		spool_result(cmds, body->id, EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED, "", NULL, 0,
			     now);
		break;
	case EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES:
		restart_start(cmds, body);
		break;
	case EXFLEET__COMMAND_BODY__ACTION_VERIFY_CREDENTIALS:
		verify_run(cmds, body, now);
		break;
	case EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS:
		grant_run(cmds, body, now);
		break;
	case EXFLEET__COMMAND_BODY__ACTION_SET_SERVICE_CREDENTIALS:
		set_credentials_run(cmds, body, now);
		break;
	case EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK:
		reapply_run(cmds, body, now);
		break;
	default:
		break;
	}
out:
	if (body)
		exfleet__command_body__free_unpacked(body, NULL);
	exfleet__command__free_unpacked(cmd, NULL);
}

static void run_next(struct commands *cmds)
{
	while (!cmds->running && cmds->nqueued > 0) {
		Exfleet__Command *cmd = cmds->queue[0];
		memmove(cmds->queue, cmds->queue + 1, --cmds->nqueued * sizeof(cmds->queue[0]));
		execute(cmds, cmd);
	}
}

int commands_reload_crl(struct commands *cmds, char *err, size_t errlen)
{
	return sign_verifier_reload_crl(cmds->verifier, err, errlen);
}

void commands_receive(struct commands *cmds, Exfleet__Command *cmd)
{
	if (cmds->nqueued == COMMAND_QUEUE_MAX) {
		log_warn("command queue full (%d): a command was dropped; the collector will "
			 "see no result for it",
			 COMMAND_QUEUE_MAX);
		exfleet__command__free_unpacked(cmd, NULL);
		return;
	}
	cmds->queue[cmds->nqueued++] = cmd;
	run_next(cmds);
}

/* ---- the sealing key ---- */

/* An encrypted key is answered "no passphrase" rather than prompted for. */
static int no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* Loads (or makes) the sealing key and signs its public half with the
 * agent certificate's key, which is wiped and freed again at once. */
static int sealing_key_open(struct commands *cmds, char *err, size_t errlen)
{
	const struct agent_config *cfg = cmds->cfg;
	char path[1024], why[512], hex[2 * SEAL_KEY_LEN + 1];
	char *pem = NULL;
	size_t pem_len = 0;
	BIO *bio = NULL;
	EVP_PKEY *cert_key = NULL;
	int rc;

	if (cfg->sealing_key)
		snprintf(path, sizeof(path), "%s", cfg->sealing_key);
	else
		snprintf(path, sizeof(path), "%s/sealing.key", cfg->spool_dir);
	if ((rc = seal_key_load_or_create(path, &cmds->seal_key, why, sizeof(why))) < 0) {
		snprintf(err, errlen, "sealing_key: %s", why);
		goto out;
	}
	if ((rc = seal_key_public(cmds->seal_key, cmds->seal_public)) < 0) {
		snprintf(err, errlen, "sealing_key: %s: no X25519 public key", path);
		goto out;
	}
	/* Signed by the certificate's key, so exfleetctl can tell this key from
	 * one a collector might put in its place. */
	if (!cfg->key_file) {
		snprintf(err, errlen, "sealing_key: no [tls] key to sign it with");
		rc = UV_EINVAL;
		goto out;
	}
	if ((rc = util_check_private_file(cfg->key_file, why, sizeof(why))) < 0 ||
	    (rc = util_read_file(cfg->key_file, CERT_KEY_FILE_MAX, &pem, &pem_len, why,
				 sizeof(why))) < 0) {
		snprintf(err, errlen, "sealing_key: cannot sign it: [tls] key: %s", why);
		goto out;
	}
	bio = BIO_new_mem_buf(pem, (int)pem_len);
	cert_key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase_cb, NULL) : NULL;
	ERR_clear_error();
	if (!cert_key) {
		snprintf(err, errlen,
			 "sealing_key: cannot sign it: [tls] key: %s is not a PEM private key "
			 "without a passphrase",
			 cfg->key_file);
		rc = UV_EINVAL;
		goto out;
	}
	if ((rc = seal_key_sign(cert_key, cfg->host_id, cmds->seal_public, &cmds->seal_signature,
				&cmds->seal_signature_len, why, sizeof(why))) < 0) {
		snprintf(err, errlen, "sealing_key: cannot sign it with [tls] key %s: %s",
			 cfg->key_file, why);
		goto out;
	}
	util_hex(cmds->seal_public, SEAL_KEY_LEN, hex);
	log_info("sealing key %s: X25519 %.16s...", path, hex);
	rc = 0;
out:
	BIO_free(bio);
	EVP_PKEY_free(cert_key);
	if (pem) {
		OPENSSL_cleanse(pem, pem_len);
		free(pem);
	}
	return rc;
}

static void sealing_key_close(struct commands *cmds)
{
	EVP_PKEY_free(cmds->seal_key);
	cmds->seal_key = NULL;
	free(cmds->seal_signature);
	cmds->seal_signature = NULL;
	cmds->seal_signature_len = 0;
}

int commands_init(struct commands *cmds, uv_loop_t *loop, const struct agent_config *cfg,
		  struct collect *collect, void (*result_cb)(void *arg), void *arg, char *err,
		  size_t errlen)
{
	memset(cmds, 0, sizeof(*cmds));
	cmds->loop = loop;
	cmds->cfg = cfg;
	cmds->collect = collect;
	cmds->result_cb = result_cb;
	cmds->arg = arg;
	if (cfg->replay_cache)
		snprintf(cmds->replay_path, sizeof(cmds->replay_path), "%s", cfg->replay_cache);
	else
		snprintf(cmds->replay_path, sizeof(cmds->replay_path), "%s/commands.seen",
			 cfg->spool_dir);
	int rc = replay_load(cmds, err, errlen);
	if (rc < 0)
		goto fail;
	/* Operators' certificates come from the deployment CA, as ours does. */
	cmds->verifier = sign_verifier_new(cfg->ca_file, cfg->crl_file, err, errlen);
	if (!cmds->verifier) {
		rc = UV_EINVAL;
		goto fail;
	}
	if ((rc = sealing_key_open(cmds, err, errlen)) < 0)
		goto fail;
	uv_timer_init(loop, &cmds->timer);
	cmds->timer.data = cmds;
	return 0;
fail:
	sealing_key_close(cmds);
	sign_verifier_free(cmds->verifier);
	cmds->verifier = NULL;
	free(cmds->seen);
	cmds->seen = NULL;
	return rc;
}

void commands_close(struct commands *cmds)
{
	uv_timer_stop(&cmds->timer);
	uv_close((uv_handle_t *)&cmds->timer, NULL);
	if (cmds->running)
		plan_free(cmds->running);
	cmds->running = NULL;
	for (size_t i = 0; i < cmds->nqueued; i++)
		exfleet__command__free_unpacked(cmds->queue[i], NULL);
	cmds->nqueued = 0;
	free(cmds->seen);
	cmds->seen = NULL;
	sign_verifier_free(cmds->verifier);
	cmds->verifier = NULL;
	sealing_key_close(cmds);
}
