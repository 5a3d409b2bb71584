/* What a simulated agent says: a healthy Exchange Server 5.5 SP3 member server
 * of domain CORP (the six Exchange services running as CORP\exsvc with the
 * rights they need) and the routine events such a server logs; or, for
 * promote, a server at risk (Exchange as a local account) and what it logs
 * when dcpromo breaks it (DESIGN.md, "Simulated host"). Records are
 * made from their sequence number, so an agent keeps no copy of what it has
 * not had acknowledged: a resend makes the same record again. */
#include <stdio.h>
#include <string.h>

#include "loadgen.h"
#include "wire.h"

#define SERVICE_COUNT 6

static const struct {
	const char *name, *display, *dep;
} exchange[SERVICE_COUNT] = {
    {"MSExchangeSA", "Microsoft Exchange System Attendant", NULL},
    {"MSExchangeDS", "Microsoft Exchange Directory", "MSExchangeSA"},
    {"MSExchangeIS", "Microsoft Exchange Information Store", "MSExchangeDS"},
    {"MSExchangeMTA", "Microsoft Exchange Message Transfer Agent", "MSExchangeDS"},
    {"MSExchangeIMC", "Microsoft Exchange Internet Mail Service", "MSExchangeMTA"},
    {"MSExchangeES", "Microsoft Exchange Event Service", "MSExchangeIS"},
};

static char *rights[] = {"SeServiceLogonRight", "SeTcbPrivilege", "SeRestorePrivilege"};

/* Routine events, none of which the collector's status rules look for. */
struct routine_event {
	const char *log, *source, *category;
	uint32_t event_id, category_id;
	Exfleet__EventType type;
	const char *text;
	const char *strings[2];
};

static const struct routine_event routine[] = {
    {"Application",
     "MSExchangeIS Public",
     "General",
     1221,
     6,
     EXFLEET__EVENT_TYPE__EVENT_INFORMATION,
     "The database has 0 megabytes of free space after online defragmentation has terminated.",
     {"0", NULL}},
    {"Application",
     "MSExchangeIS Private",
     "Background Cleanup",
     1207,
     5,
     EXFLEET__EVENT_TYPE__EVENT_INFORMATION,
     "Starting to remove expired messages from folders.",
     {NULL, NULL}},
    {"System",
     "Service Control Manager",
     "None",
     7036,
     0,
     EXFLEET__EVENT_TYPE__EVENT_INFORMATION,
     "The Microsoft Exchange Event Service service entered the running state.",
     {"Microsoft Exchange Event Service", "running"}},
    {"Application",
     "MSExchangeMTA",
     "Interface",
     9298,
     2,
     EXFLEET__EVENT_TYPE__EVENT_INFORMATION,
     "Microsoft Exchange MTA has started.",
     {NULL, NULL}},
};

#define ROUTINE_COUNT (sizeof(routine) / sizeof(routine[0]))

/* One message is built at a time; its parts live here until the next. */
static struct {
	Exfleet__Hello hello;
	Exfleet__Label site, wave, *labels[2];
	char wave_value[16];
	char *caps[2];
	Exfleet__Snapshot snapshot;
	Exfleet__Service service[SERVICE_COUNT], *services[SERVICE_COUNT];
	char *deps[SERVICE_COUNT][1];
	char account[PKI_NAME_MAX + 8]; /* HOST\exsvc */
	Exfleet__EventBatch batch;
	Exfleet__Event event[LG_BATCH_MAX], *events[LG_BATCH_MAX];
	char *strings[LG_BATCH_MAX][3];
	char text[LG_PROMOTE_EVENTS][256];
	char code[LG_PROMOTE_EVENTS][16];
	Exfleet__Heartbeat heartbeat;
	Exfleet__CommandResult result;
	Exfleet__StepResult step, *steps[1];
} msg;

void records_hello(Exfleet__AgentMessage *m, const char *host_id, unsigned index, uint64_t highest,
                   uint64_t lowest)
{
	exfleet__hello__init(&msg.hello);
	exfleet__label__init(&msg.site);
	exfleet__label__init(&msg.wave);
	msg.site.key = "site";
	msg.site.value = "load";
	/* Four migration waves, so wave reports have something to group. */
	snprintf(msg.wave_value, sizeof(msg.wave_value), "wave-%u", index % 4 + 1);
	msg.wave.key = "wave";
	msg.wave.value = msg.wave_value;
	msg.labels[0] = &msg.site;
	msg.labels[1] = &msg.wave;
	msg.caps[0] = "spool";
	msg.caps[1] = "commands";
	msg.hello.protocol_version = WIRE_PROTOCOL_VERSION;
	msg.hello.host_id = (char *)host_id;
	msg.hello.agent_version = EXFLEET_VERSION;
	msg.hello.platform = "loadgen";
	msg.hello.capabilities = msg.caps;
	msg.hello.n_capabilities = 2;
	msg.hello.labels = msg.labels;
	msg.hello.n_labels = 2;
	msg.hello.highest_sequence = highest;
	msg.hello.lowest_sequence = lowest;
	m->msg_case = EXFLEET__AGENT_MESSAGE__MSG_HELLO;
	m->hello = &msg.hello;
}

void records_snapshot(Exfleet__AgentMessage *m, const char *host_id, uint64_t seq, int64_t now_ms,
                      enum lg_host_state state, int64_t promoted_at_ms)
{
	Exfleet__Snapshot *s = &msg.snapshot;
	int local = state != LG_HOST_HEALTHY;
	snprintf(msg.account, sizeof(msg.account), "%s\\exsvc", host_id);
	exfleet__snapshot__init(s);
	s->sequence = seq;
	s->observed_at_ms = now_ms;
	s->computer_name = (char *)host_id;
	s->role = EXFLEET__DOMAIN_ROLE__ROLE_MEMBER_SERVER;
	s->domain = "CORP";
	s->sam_present = 1;
	s->exchange_version = "5.5.2653";
	s->exchange_service_pack = 3;
	if (state == LG_HOST_PROMOTED) {
		s->role = EXFLEET__DOMAIN_ROLE__ROLE_BACKUP_DC;
		s->role_changed_at_ms = promoted_at_ms;
		s->sam_present = 0;
	}
	for (size_t i = 0; i < SERVICE_COUNT; i++) {
		Exfleet__Service *v = &msg.service[i];
		exfleet__service__init(v);
		v->name = (char *)exchange[i].name;
		v->display_name = (char *)exchange[i].display;
		v->state = EXFLEET__SERVICE_STATE__SERVICE_RUNNING;
		v->start_type = EXFLEET__START_TYPE__START_AUTO;
		v->logon_account = local ? msg.account : "CORP\\exsvc";
		v->account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_EXISTS;
		v->account_rights = rights;
		v->n_account_rights = sizeof(rights) / sizeof(rights[0]);
		if (state == LG_HOST_PROMOTED) {
			/* The SAM went with the promotion, and the account with it. */
			v->state = EXFLEET__SERVICE_STATE__SERVICE_STOPPED;
			v->win32_exit_code = 1069;
			v->account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING;
			v->account_rights = NULL;
			v->n_account_rights = 0;
		}
		if (exchange[i].dep) {
			msg.deps[i][0] = (char *)exchange[i].dep;
			v->dependencies = msg.deps[i];
			v->n_dependencies = 1;
		}
		msg.services[i] = v;
	}
	s->services = msg.services;
	s->n_services = SERVICE_COUNT;
	m->msg_case = EXFLEET__AGENT_MESSAGE__MSG_SNAPSHOT;
	m->snapshot = s;
}

/* Dcpromo event k (0 to LG_PROMOTE_EVENTS - 1), as the simulated host logs
 * them: each Exchange service fails to log on as the vanished local
 * account, then POP3 and IMAP4 clients fail to authenticate. */
static void promote_event(Exfleet__Event *e, unsigned k, const char *host_id, char **strings)
{
	e->computer = (char *)host_id;
	e->message = msg.text[k];
	e->insertion_strings = strings;
	if (k < LG_PROMOTE_AUTH_FIRST) {
		unsigned svc = k / 2;
		e->log = "System";
		e->source = "Service Control Manager";
		e->type = EXFLEET__EVENT_TYPE__EVENT_ERROR;
		e->category_name = "None";
		if (k % 2 == 0) {
			e->event_id = 7038;
			snprintf(msg.code[k], sizeof(msg.code[k]), "%%%%1326");
			snprintf(msg.text[k], sizeof(msg.text[k]),
			         "The %s service was unable to log on as %s with the currently "
			         "configured password due to the following error: Logon failure: "
			         "unknown user name or bad password.",
			         exchange[svc].name, msg.account);
			strings[0] = (char *)exchange[svc].name;
			strings[1] = msg.account;
			strings[2] = msg.code[k];
			e->n_insertion_strings = 3;
		} else {
			e->event_id = 7000;
			snprintf(msg.code[k], sizeof(msg.code[k]), "%%%%1069");
			snprintf(msg.text[k], sizeof(msg.text[k]),
			         "The %s service failed to start due to the following error: The "
			         "service did not start due to a logon failure.",
			         exchange[svc].display);
			strings[0] = (char *)exchange[svc].display;
			strings[1] = msg.code[k];
			e->n_insertion_strings = 2;
		}
		return;
	}
	e->log = "Application";
	e->source = k == LG_PROMOTE_AUTH_FIRST ? "MSExchangePOP3" : "MSExchangeIMAP4";
	e->event_id = 13003;
	e->type = EXFLEET__EVENT_TYPE__EVENT_ERROR;
	e->category = 2;
	e->category_name = "Authentication";
	snprintf(msg.text[k], sizeof(msg.text[k]), "A required privilege is not held by the client");
	e->insertion_strings = NULL;
	e->n_insertion_strings = 0;
}

void records_events(Exfleet__AgentMessage *m, const char *host_id, uint64_t first, size_t n,
                    int64_t now_ms, uint64_t promote_first)
{
	if (n > LG_BATCH_MAX)
		n = LG_BATCH_MAX;
	snprintf(msg.account, sizeof(msg.account), "%s\\exsvc", host_id);
	for (size_t i = 0; i < n; i++) {
		uint64_t seq = first + i;
		Exfleet__Event *e = &msg.event[i];
		exfleet__event__init(e);
		e->sequence = seq;
		e->record_number = (uint32_t)seq;
		e->time_generated_ms = now_ms;
		msg.events[i] = e;
		if (promote_first && seq >= promote_first &&
		    seq < promote_first + LG_PROMOTE_EVENTS) {
			promote_event(e, (unsigned)(seq - promote_first), host_id, msg.strings[i]);
			continue;
		}
		const struct routine_event *r = &routine[seq % ROUTINE_COUNT];
		e->log = (char *)r->log;
		e->source = (char *)r->source;
		e->event_id = r->event_id;
		e->type = r->type;
		e->category = r->category_id;
		e->category_name = (char *)r->category;
		e->message = (char *)r->text;
		e->computer = (char *)host_id;
		size_t ns = 0;
		while (ns < 2 && r->strings[ns]) {
			msg.strings[i][ns] = (char *)r->strings[ns];
			ns++;
		}
		e->insertion_strings = ns ? msg.strings[i] : NULL;
		e->n_insertion_strings = ns;
	}
	exfleet__event_batch__init(&msg.batch);
	msg.batch.events = msg.events;
	msg.batch.n_events = n;
	m->msg_case = EXFLEET__AGENT_MESSAGE__MSG_EVENTS;
	m->events = &msg.batch;
}

void records_heartbeat(Exfleet__AgentMessage *m, uint64_t highest, int64_t now_ms)
{
	exfleet__heartbeat__init(&msg.heartbeat);
	msg.heartbeat.sent_at_ms = now_ms;
	msg.heartbeat.highest_sequence = highest;
	m->msg_case = EXFLEET__AGENT_MESSAGE__MSG_HEARTBEAT;
	m->heartbeat = &msg.heartbeat;
}

void records_result(Exfleet__AgentMessage *m, uint64_t seq, const char *command_id,
                    Exfleet__CommandStatus status, const char *reason, const char *step,
                    int64_t started_ms, int64_t now_ms)
{
	Exfleet__CommandResult *r = &msg.result;
	exfleet__command_result__init(r);
	r->sequence = seq;
	r->command_id = (char *)command_id;
	r->status = status;
	r->reason = (char *)(reason ? reason : "");
	r->started_at_ms = started_ms;
	r->finished_at_ms = now_ms;
	if (step) {
		exfleet__step_result__init(&msg.step);
		msg.step.step = (char *)step;
		msg.step.ok = status == EXFLEET__COMMAND_STATUS__COMMAND_SUCCEEDED;
		msg.step.message = "simulated by exfleet-loadgen: nothing was changed";
		msg.step.finished_at_ms = now_ms;
		msg.steps[0] = &msg.step;
		r->steps = msg.steps;
		r->n_steps = 1;
	}
	m->msg_case = EXFLEET__AGENT_MESSAGE__MSG_COMMAND_RESULT;
	m->command_result = r;
}
