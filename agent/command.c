#include "command.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sign.h"
#include "util.h"

#define POLL_MS 250

struct restart_plan {
	char id[COMMAND_ID_MAX + 1];
	int64_t started_ms, deadline_ms;
	char **order;           /* start order; stopped in reverse */
	size_t n;
	size_t done;            /* services finished in the current phase */
	int stopping;           /* phase: 1 stop, 0 start */
	int requested;          /* the current service's stop/start was issued */
	Exfleet__StepResult **steps;
	size_t nsteps;
	int failed;
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

static void add_step(struct restart_plan *plan, const char *step, const char *target, int ok,
		     uint32_t win32_error, const char *message)
{
	Exfleet__StepResult **grown =
		realloc(plan->steps, (plan->nsteps + 1) * sizeof(*plan->steps));
	Exfleet__StepResult *sr = calloc(1, sizeof(*sr));
	if (!grown || !sr) {
		free(sr);
		if (grown)
			plan->steps = grown;
		plan->failed = 1;
		return;
	}
	plan->steps = grown;
	exfleet__step_result__init(sr);
	sr->step = strdup(step);
	sr->target = strdup(target);
	sr->ok = ok;
	sr->win32_error = win32_error;
	sr->message = strdup(message);
	sr->finished_at_ms = util_now_ms();
	plan->steps[plan->nsteps++] = sr;
	if (!ok)
		plan->failed = 1;
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

/* ---- RESTART_SERVICES: stop in reverse dependency order, start in order ---- */

static void plan_free(struct restart_plan *plan)
{
	for (size_t i = 0; i < plan->n; i++)
		free(plan->order[i]);
	free(plan->order);
	for (size_t i = 0; i < plan->nsteps; i++)
		exfleet__step_result__free_unpacked(plan->steps[i], NULL);
	free(plan->steps);
	free(plan);
}

static const Exfleet__Service *find_service(const Exfleet__Snapshot *snap, const char *name)
{
	for (size_t i = 0; i < snap->n_services; i++)
		if (strcmp(snap->services[i]->name, name) == 0)
			return snap->services[i];
	return NULL;
}

static int in_list(char **list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], name) == 0)
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
	while (!plan->failed && plan->done < plan->n) {
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
			if (r.win32_error && !(plan->stopping && r.win32_error == WIN32_SERVICE_NOT_ACTIVE)) {
				add_step(plan, plan->stopping ? "stop" : "start", name, 0, r.win32_error,
					 r.message[0] ? r.message : winerr_text(r.win32_error));
				break;
			}
		}
		b->query_service(p, name, &state, &exit_code, &r);
		int want = plan->stopping ? EXFLEET__SERVICE_STATE__SERVICE_STOPPED
					  : EXFLEET__SERVICE_STATE__SERVICE_RUNNING;
		if (state == want) {
			add_step(plan, plan->stopping ? "stop" : "start", name, 1, 0,
				 plan->stopping ? "stopped" : "running");
		} else if (!plan->stopping && state == EXFLEET__SERVICE_STATE__SERVICE_STOPPED) {
			add_step(plan, "start", name, 0, exit_code, winerr_text(exit_code));
			break;
		} else if (util_now_ms() > plan->deadline_ms) {
			add_step(plan, plan->stopping ? "stop" : "start", name, 0,
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
	char reason[300] = "";
	for (size_t i = 0; i < plan->nsteps; i++)
		if (!plan->steps[i]->ok) {
			snprintf(reason, sizeof(reason), "%s %s: %u %s", plan->steps[i]->step,
				 plan->steps[i]->target, plan->steps[i]->win32_error,
				 plan->steps[i]->message);
			break;
		}
	/* What the restart left behind goes out too. */
	collect_forget_snapshot(cmds->collect);
	spool_result(cmds, plan->id,
		     plan->failed ? EXFLEET__COMMAND_STATUS__COMMAND_FAILED
				  : EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED,
		     reason, plan->steps, plan->nsteps, plan->started_ms);
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
			add_step(plan, "restart", rs->services[i], 0, WIN32_SERVICE_DOES_NOT_EXIST,
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
		if (plan->nsteps == 0)
			add_step(plan, "restart", "", 0, 0, problem);
		plan->failed = 1;
		restart_finish(cmds);
		return;
	}
	uv_timer_start(&cmds->timer, poll_cb, POLL_MS, POLL_MS);
	restart_tick(cmds);
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

static int id_valid(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n <= COMMAND_ID_MAX && strspn(id, "0123456789abcdef") == n;
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
		if (claimed && id_valid(claimed->id)) {
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
	log_info("command %s: %s, signed by %s", body->id, action_name(body->action_case),
		 operator);
	switch (body->action_case) {
	case EXFLEET__COMMAND_BODY__ACTION_RESCAN:
		collect_forget_snapshot(cmds->collect);
		spool_result(cmds, body->id, EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED, "", NULL, 0,
			     now);
		break;
	case EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES:
		restart_start(cmds, body);
		break;
	default:
		snprintf(reason, sizeof(reason), "not enabled: this agent does not run %s yet",
			 action_name(body->action_case));
		spool_result(cmds, body->id, EXFLEET__COMMAND_STATUS__COMMAND_REJECTED, reason, NULL,
			     0, now);
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
	if (rc < 0) {
		free(cmds->seen);
		return rc;
	}
	/* Operators' certificates come from the deployment CA, as ours does. */
	cmds->verifier = sign_verifier_new(cfg->ca_file, cfg->crl_file, err, errlen);
	if (!cmds->verifier) {
		free(cmds->seen);
		return UV_EINVAL;
	}
	uv_timer_init(loop, &cmds->timer);
	cmds->timer.data = cmds;
	return 0;
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
}
