/* Host status rules; see status.h for the rules and DESIGN.md for why. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "util.h"
#include "winerr.h"

#define DAY_MS (24 * 3600 * 1000LL)
#define LINE_LEN (sizeof(((struct status_result *)0)->evidence[0]) - 1)
#define TIME_LEN 32
#define CLAUSE_LEN 64
#define SCM_GROUPS_MAX 32

static const char *const status_names[] = {
	[HOST_HEALTHY] = "HEALTHY",
	[HOST_REPAIRED] = "REPAIRED",
	[HOST_DEGRADED] = "DEGRADED",
	[HOST_AT_RISK] = "AT_RISK",
	[HOST_AFFECTED] = "AFFECTED",
	[HOST_NEEDS_SP_REINSTALL] = "NEEDS_SP_REINSTALL",
	[HOST_REPAIRING] = "REPAIRING",
};

static const char *const connectivity_names[] = {
	[CONN_ONLINE] = "ONLINE",
	[CONN_OFFLINE] = "OFFLINE",
	[CONN_NEVER_SEEN] = "NEVER_SEEN",
};

static const char *const default_services[] = {
	"MSExchangeSA",  "MSExchangeDS",  "MSExchangeIS",
	"MSExchangeMTA", "MSExchangeIMC", "MSExchangeES",
};

static const struct status_signature default_auth[] = {
	{"MSExchangePOP3", 13003},
	{"MSExchangeIMAP4", 13003},
};

static const char *const default_rights[] = {
	"SeServiceLogonRight", "SeTcbPrivilege", "SeRestorePrivilege",
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- small string helpers ---- */

static const char *str(const char *s)
{
	return s ? s : "";
}

/* ASCII only: Windows names compare case-insensitively, and the locale of
 * the collector must not change what matches. */
static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int ieq(const char *a, const char *b)
{
	a = str(a);
	b = str(b);
	while (*a && lower((unsigned char)*a) == lower((unsigned char)*b)) {
		a++;
		b++;
	}
	return *a == '\0' && *b == '\0';
}

static int ieq_n(const char *a, size_t n, const char *b)
{
	b = str(b);
	for (size_t i = 0; i < n; i++, b++)
		if (*b == '\0' || lower((unsigned char)a[i]) != lower((unsigned char)*b))
			return 0;
	return *b == '\0';
}

static void fmt_time(int64_t ms, char *buf)
{
	util_format_time(ms, buf, TIME_LEN);
}

/* "%%1069", how SCM insertion strings carry a Win32 error; 0 if not one. */
static uint32_t win32_code_of(const char *s)
{
	s = str(s);
	if (s[0] != '%' || s[1] != '%' || s[2] == '\0')
		return 0;
	uint32_t code = 0;
	for (s += 2; *s; s++) {
		if (*s < '0' || *s > '9' || code > 99999999u)
			return 0;
		code = code * 10 + (uint32_t)(*s - '0');
	}
	return code;
}

/* ---- evidence lines: capped, never cut mid-word ----
 *
 * Lines are distinct by construction: a repeated service entry is skipped
 * (watched_at), a signature listed twice counts once, events and services
 * that say the same thing are grouped onto one line. */

struct evidence {
	struct status_result *out;
	size_t hidden; /* lines past the cap */
};

/* Shortens line to at most max characters ending in "...", at the last
 * space when there is one in its second half, and never inside a UTF-8
 * sequence (the API serves these lines as JSON). */
static void shorten(char *line, size_t max)
{
	size_t cut = max - 3;
	size_t end = cut;
	while (end > cut / 2 && line[end] != ' ')
		end--;
	if (end == cut / 2)
		end = cut;
	while (end > 0 && ((unsigned char)line[end] & 0xC0) == 0x80)
		end--;
	while (end > 0 && strchr(" ,;:", line[end - 1]))
		end--;
	memcpy(line + end, "...", 4);
}

static void ev_add(struct evidence *ev, const char *fmt, ...) LOG_PRINTF(2, 3);
static void ev_add(struct evidence *ev, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (strlen(line) > LINE_LEN)
		shorten(line, LINE_LEN);
	struct status_result *out = ev->out;
	if (out->n_evidence < STATUS_EVIDENCE_MAX)
		memcpy(out->evidence[out->n_evidence++], line, strlen(line) + 1);
	else
		ev->hidden++;
}

/* The last slot gives way to the count of what did not fit. */
static void ev_finish(struct evidence *ev)
{
	struct status_result *out = ev->out;
	if (ev->hidden)
		snprintf(out->evidence[STATUS_EVIDENCE_MAX - 1], sizeof(out->evidence[0]),
			 "... and %zu more", ev->hidden + 1);
}

/* A list of service names for one line, shortened to "A, B and 4 more"
 * so that what the line says about them still fits. */
#define NAMES_BUDGET 160

struct names {
	char text[512];
	size_t n;
	size_t shown;
};

static void names_add(struct names *l, const char *name)
{
	size_t used = strlen(l->text);
	size_t need = strlen(name) + (used ? 2 : 0);
	l->n++;
	/* The first always shows; once one is left out the rest are too, so
	 * the list keeps its order. */
	if (l->shown + 1 < l->n || (l->shown && used + need > NAMES_BUDGET))
		return;
	snprintf(l->text + used, sizeof(l->text) - used, "%s%s", used ? ", " : "", name);
	l->shown++;
}

static const char *names_text(struct names *l)
{
	size_t used = strlen(l->text);
	if (l->shown < l->n)
		snprintf(l->text + used, sizeof(l->text) - used, " and %zu more", l->n - l->shown);
	return l->text;
}

/* ---- services and accounts ---- */

static int watched(const struct status_rules *r, const Exfleet__Service *s)
{
	for (size_t k = 0; k < r->n_services; k++)
		if (ieq(s->name, r->services[k]))
			return 1;
	return 0;
}

/* The watched service at i in the snapshot, or NULL: not watched, a NULL
 * entry, or a repeat of a service listed earlier (counted once). */
static const Exfleet__Service *watched_at(const struct status_rules *r,
					  const Exfleet__Snapshot *snap, size_t i)
{
	const Exfleet__Service *s = snap->services[i];
	if (!s || !watched(r, s))
		return NULL;
	for (size_t j = 0; j < i; j++)
		if (snap->services[j] && ieq(snap->services[j]->name, s->name))
			return NULL;
	return s;
}

static int running(const Exfleet__Service *s)
{
	return s->state == EXFLEET__SERVICE_STATE__SERVICE_RUNNING;
}

/* Logon and privilege failures: what a promotion does to a service. */
static int logon_failed(const Exfleet__Service *s)
{
	return s->state == EXFLEET__SERVICE_STATE__SERVICE_STOPPED &&
	       (s->win32_exit_code == WIN32_SERVICE_LOGON_FAILED ||
		s->win32_exit_code == WIN32_PRIVILEGE_NOT_HELD ||
		s->win32_exit_code == WIN32_LOGON_TYPE_NOT_GRANTED);
}

/* Built-in accounts have their rights by design and survive promotion. An
 * empty account name is LocalSystem to the SCM. */
static int builtin(const Exfleet__Service *s)
{
	const char *a = str(s->logon_account);
	return s->account_status == EXFLEET__ACCOUNT_STATUS__ACCOUNT_BUILTIN || a[0] == '\0' ||
	       ieq(a, "LocalSystem") || ieq(a, "NT AUTHORITY\\LocalService") ||
	       ieq(a, "NT AUTHORITY\\NetworkService");
}

/* ".\name" or "COMPUTER\name": an account in the SAM that dcpromo removes. */
static int local_account(const char *account, const char *computer)
{
	const char *slash = strchr(str(account), '\\');
	if (!slash)
		return 0;
	size_t n = (size_t)(slash - account);
	return (n == 1 && account[0] == '.') || (n > 0 && ieq_n(account, n, computer));
}

static int holds(const Exfleet__Service *s, const char *right)
{
	for (size_t i = 0; i < s->n_account_rights; i++)
		if (ieq(s->account_rights[i], right))
			return 1;
	return 0;
}

/* What the snapshot says about one logon account, merged over every watched
 * service that uses it. */
struct account {
	const char *name;
	int local;
	int missing;
	int rights_known;      /* some service read the account's rights */
	uint32_t rights_error; /* why they could not be read, when not known */
	size_t n_lacking;      /* required rights it lacks */
};

static int lacks(const struct status_rules *r, const Exfleet__Snapshot *snap, const char *account,
		 const char *right)
{
	for (size_t i = 0; i < snap->n_services; i++) {
		const Exfleet__Service *s = watched_at(r, snap, i);
		if (s && ieq(s->logon_account, account) && s->rights_error == 0 && !holds(s, right))
			return 1;
	}
	return 0;
}

/* Fills a for the account of the watched service at i when that service is
 * the first to use a non-built-in account; 0 otherwise, so each account is
 * looked at once. */
static int account_at(const struct status_rules *r, const Exfleet__Snapshot *snap, size_t i,
		      struct account *a)
{
	const Exfleet__Service *s = watched_at(r, snap, i);
	if (!s || builtin(s))
		return 0;
	for (size_t j = 0; j < i; j++) {
		const Exfleet__Service *t = watched_at(r, snap, j);
		if (t && ieq(t->logon_account, s->logon_account))
			return 0;
	}
	memset(a, 0, sizeof(*a));
	a->name = str(s->logon_account);
	a->local = local_account(a->name, snap->computer_name);
	for (size_t j = i; j < snap->n_services; j++) {
		const Exfleet__Service *t = watched_at(r, snap, j);
		if (!t || !ieq(t->logon_account, a->name))
			continue;
		if (t->account_status == EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING)
			a->missing = 1;
		if (t->rights_error == 0)
			a->rights_known = 1;
		else if (!a->rights_error)
			a->rights_error = t->rights_error;
	}
	/* A missing account has no rights to list; that it is gone says it all. */
	if (!a->missing && a->rights_known)
		for (size_t k = 0; k < r->n_rights; k++)
			a->n_lacking += lacks(r, snap, a->name, r->rights[k]) ? 1 : 0;
	return 1;
}

/* ---- events ---- */

static int in_window(const struct status_event *e, int64_t start)
{
	return e->time_ms >= start;
}

static int auth_match(const struct status_signature *sig, const struct status_event *e)
{
	return e->event_id == sig->event_id && ieq(e->source, sig->source);
}

/* A signature listed twice in the rules counts once. */
static int auth_repeated(const struct status_rules *r, size_t k)
{
	for (size_t j = 0; j < k; j++)
		if (r->auth[j].event_id == r->auth[k].event_id &&
		    ieq(r->auth[j].source, r->auth[k].source))
			return 1;
	return 0;
}

static size_t auth_count(const struct status_rules *r, const struct status_input *in, int64_t start)
{
	size_t n = 0;
	for (size_t k = 0; k < r->n_auth; k++) {
		if (auth_repeated(r, k))
			continue;
		for (size_t i = 0; i < in->n_events; i++)
			if (in_window(&in->events[i], start) &&
			    auth_match(&r->auth[k], &in->events[i]))
				n++;
	}
	return n;
}

static int scm_id(uint32_t id)
{
	return id == 7000 || id == 7013 || id == 7038 || id == 7041;
}

/* The watched service an insertion string names, by service name or by the
 * display name the snapshot gives it; -1 when none. Insertion strings hold a
 * whole name, so names compare whole: "Directory" must not match inside
 * another service's text. */
static int scm_service(const struct status_rules *r, const Exfleet__Snapshot *snap,
		       const char *text)
{
	if (!text || !*text)
		return -1;
	for (size_t k = 0; k < r->n_services; k++) {
		if (ieq(text, r->services[k]))
			return (int)k;
		for (size_t i = 0; snap && i < snap->n_services; i++) {
			const Exfleet__Service *s = snap->services[i];
			if (s && ieq(s->name, r->services[k]) && s->display_name &&
			    s->display_name[0] && ieq(text, s->display_name))
				return (int)k;
		}
	}
	return -1;
}

/* Repeats of one SCM complaint, shown as one line. */
struct scm_group {
	uint32_t event_id;
	int service;         /* index into rules->services */
	const char *account; /* 7038, 7041: the account it could not log on as */
	uint32_t code;       /* the Win32 error it carried, 0 if none */
	size_t count;
};

struct scm_groups {
	struct scm_group g[SCM_GROUPS_MAX];
	size_t n;
	size_t total;    /* events that count */
	size_t overflow; /* events of groups that did not fit */
};

static void scm_collect(const struct status_rules *r, const struct status_input *in, int64_t start,
			struct scm_groups *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < in->n_events; i++) {
		const struct status_event *e = &in->events[i];
		if (!in_window(e, start) || !scm_id(e->event_id) ||
		    !ieq(e->source, "Service Control Manager"))
			continue;
		struct scm_group key = {.event_id = e->event_id, .service = -1};
		for (size_t j = 0; j < e->n_strings; j++) {
			uint32_t code = win32_code_of(e->strings[j]);
			if (code) {
				key.code = code;
				continue;
			}
			if (key.service >= 0)
				continue;
			key.service = scm_service(r, in->snapshot, e->strings[j]);
			/* 7038 and 7041 name the account right after the service. */
			if (key.service >= 0 && (e->event_id == 7038 || e->event_id == 7041) &&
			    j + 1 < e->n_strings && !win32_code_of(e->strings[j + 1]))
				key.account = e->strings[j + 1];
		}
		if (key.service < 0)
			continue;
		out->total++;
		size_t g;
		for (g = 0; g < out->n; g++)
			if (out->g[g].event_id == key.event_id &&
			    out->g[g].service == key.service && out->g[g].code == key.code &&
			    ieq(out->g[g].account, key.account) &&
			    (out->g[g].account == NULL) == (key.account == NULL))
				break;
		if (g == out->n) {
			if (out->n == SCM_GROUPS_MAX) {
				out->overflow++;
				continue;
			}
			out->g[out->n++] = key;
		}
		out->g[g].count++;
	}
}

/* ---- the classification ---- */

struct window {
	int64_t start;           /* events at or after it count */
	char clause[CLAUSE_LEN]; /* "since promotion at ...", "in the last 7 days" */
};

static void span_clause(int64_t ms, char *buf, size_t len)
{
	static const struct {
		int64_t ms;
		const char *unit;
	} units[] = {{DAY_MS, "day"}, {3600000, "hour"}, {60000, "minute"}, {1000, "second"}};
	for (size_t i = 0; i < N_OF(units); i++) {
		if (ms % units[i].ms)
			continue;
		int64_t n = ms / units[i].ms;
		if (n == 1)
			snprintf(buf, len, "in the last %s", units[i].unit);
		else
			snprintf(buf, len, "in the last %lld %ss", (long long)n, units[i].unit);
		return;
	}
	snprintf(buf, len, "in the last %lld ms", (long long)ms);
}

static void window_of(const struct status_rules *r, const struct status_input *in, int is_dc,
		      struct window *w)
{
	char t[TIME_LEN];
	int64_t promoted = in->promoted_at_ms;
	if (!promoted && is_dc && in->snapshot->role_changed_at_ms > 0)
		promoted = in->snapshot->role_changed_at_ms;
	if (is_dc && promoted > 0) {
		w->start = promoted;
		fmt_time(promoted, t);
		snprintf(w->clause, sizeof(w->clause), "since promotion at %s", t);
	} else {
		int64_t retention = r->retention_ms > 0 ? r->retention_ms : 7 * DAY_MS;
		w->start = in->now_ms > INT64_MIN + retention ? in->now_ms - retention : INT64_MIN;
		span_clause(retention, w->clause, sizeof(w->clause));
	}
	if (in->repaired_at_ms > 0 && in->repaired_at_ms > w->start) {
		w->start = in->repaired_at_ms;
		fmt_time(in->repaired_at_ms, t);
		snprintf(w->clause, sizeof(w->clause), "since the repair at %s", t);
	}
}

/* Everything the rules decide on, gathered once. */
struct findings {
	int is_dc;
	size_t n_watched;
	size_t n_down;         /* watched services not running */
	size_t n_logon_failed; /* of those, stopped by 1069, 1314 or 1385 */
	size_t n_local;        /* accounts in the SAM */
	size_t n_missing;      /* accounts that no longer resolve */
	size_t n_lacking;      /* accounts that lack a required right */
	size_t n_checked;      /* accounts whose rights were read */
	const char *checked;   /* the one such account, for the summary */
	size_t n_auth;         /* auth-privilege events in the window */
	size_t n_auth_since_repair;
	struct window w;
	struct scm_groups scm; /* SCM events naming watched services, in the window */
};

static void find(const struct status_rules *r, const struct status_input *in, struct findings *f)
{
	const Exfleet__Snapshot *snap = in->snapshot;
	memset(f, 0, sizeof(*f));
	f->is_dc = snap && (snap->role == EXFLEET__DOMAIN_ROLE__ROLE_BACKUP_DC ||
			    snap->role == EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC);
	window_of(r, in, f->is_dc, &f->w);
	f->n_auth = auth_count(r, in, f->w.start);
	if (in->repaired_at_ms > 0)
		f->n_auth_since_repair = auth_count(r, in, in->repaired_at_ms);
	if (!snap)
		return;
	for (size_t i = 0; i < snap->n_services; i++) {
		const Exfleet__Service *s = watched_at(r, snap, i);
		if (!s)
			continue;
		f->n_watched++;
		f->n_down += running(s) ? 0 : 1;
		f->n_logon_failed += logon_failed(s) ? 1 : 0;
		struct account a;
		if (!account_at(r, snap, i, &a))
			continue;
		f->n_local += a.local ? 1 : 0;
		f->n_missing += a.missing ? 1 : 0;
		f->n_lacking += a.n_lacking ? 1 : 0;
		if (!a.missing && a.rights_known) {
			f->n_checked++;
			f->checked = a.name;
		}
	}
	if (f->is_dc)
		scm_collect(r, in, f->w.start, &f->scm);
}

static const char *state_text(Exfleet__ServiceState state)
{
	switch (state) {
	case EXFLEET__SERVICE_STATE__SERVICE_STOPPED:
		return "stopped";
	case EXFLEET__SERVICE_STATE__SERVICE_START_PENDING:
		return "start pending";
	case EXFLEET__SERVICE_STATE__SERVICE_STOP_PENDING:
		return "stop pending";
	case EXFLEET__SERVICE_STATE__SERVICE_RUNNING:
		return "running";
	case EXFLEET__SERVICE_STATE__SERVICE_CONTINUE_PENDING:
		return "continue pending";
	case EXFLEET__SERVICE_STATE__SERVICE_PAUSE_PENDING:
		return "pause pending";
	case EXFLEET__SERVICE_STATE__SERVICE_PAUSED:
		return "paused";
	default:
		return "in an unknown state";
	}
}

/* Down the same way: stopped with the same exit code, or in the same state. */
static int same_outage(const Exfleet__Service *a, const Exfleet__Service *b)
{
	return a->state == b->state && (a->state != EXFLEET__SERVICE_STATE__SERVICE_STOPPED ||
					a->win32_exit_code == b->win32_exit_code);
}

enum down { DOWN_ALL, DOWN_LOGON, DOWN_OTHER };

static int down_as(const Exfleet__Service *s, enum down which)
{
	if (running(s))
		return 0;
	return which == DOWN_ALL || (which == DOWN_LOGON) == (logon_failed(s) != 0);
}

/* "MSExchangeIS stopped: 1069 The service ... (since T)", "MSExchangeMTA is
 * stopped"; services down the same way share a line, so a whole outage fits
 * beside the rest of the evidence. */
static void add_down(struct evidence *ev, const struct status_rules *r,
		     const Exfleet__Snapshot *snap, enum down which)
{
	char t[TIME_LEN] = "";
	if (snap->observed_at_ms > 0)
		fmt_time(snap->observed_at_ms, t);
	for (size_t i = 0; i < snap->n_services; i++) {
		const Exfleet__Service *s = watched_at(r, snap, i);
		if (!s || !down_as(s, which))
			continue;
		size_t j;
		for (j = 0; j < i; j++) {
			const Exfleet__Service *u = watched_at(r, snap, j);
			if (u && down_as(u, which) && same_outage(u, s))
				break;
		}
		if (j < i)
			continue; /* on an earlier service's line */
		struct names l = {.n = 0};
		for (j = i; j < snap->n_services; j++) {
			const Exfleet__Service *u = watched_at(r, snap, j);
			if (u && down_as(u, which) && same_outage(u, s))
				names_add(&l, str(u->name));
		}
		if (s->state == EXFLEET__SERVICE_STATE__SERVICE_STOPPED && s->win32_exit_code)
			ev_add(ev, "%s stopped: %u %s%s%s%s", names_text(&l), s->win32_exit_code,
			       winerr_text(s->win32_exit_code), t[0] ? " (since " : "", t,
			       t[0] ? ")" : "");
		else
			ev_add(ev, "%s %s %s", names_text(&l), l.n == 1 ? "is" : "are",
			       state_text(s->state));
	}
}

/* "37 x MSExchangePOP3/13003 since promotion at T", per signature. */
static void add_auth(struct evidence *ev, const struct status_rules *r,
		     const struct status_input *in, int64_t start, const char *clause,
		     const char *advice)
{
	for (size_t k = 0; k < r->n_auth; k++) {
		if (auth_repeated(r, k))
			continue;
		size_t n = 0;
		for (size_t i = 0; i < in->n_events; i++)
			if (in_window(&in->events[i], start) &&
			    auth_match(&r->auth[k], &in->events[i]))
				n++;
		if (n)
			ev_add(ev, "%zu x %s/%u %s%s", n, str(r->auth[k].source),
			       r->auth[k].event_id, clause, advice);
	}
}

/* "2 x SCM 7038: MSExchangeIS could not log on as .\exsvc: 1326 Logon
 * failure: ... (since promotion at T)". */
static void add_scm(struct evidence *ev, const struct status_rules *r, const struct findings *f)
{
	for (size_t g = 0; g < f->scm.n; g++) {
		const struct scm_group *sg = &f->scm.g[g];
		const char *svc = r->services[sg->service];
		char what[320];
		switch (sg->event_id) {
		case 7000:
			snprintf(what, sizeof(what), "%s failed to start", svc);
			break;
		case 7013:
			snprintf(what, sizeof(what), "%s: logon with the current password failed",
				 svc);
			break;
		default: /* 7038, 7041 */
			snprintf(what, sizeof(what), "%s could not log on as %s", svc,
				 sg->account ? sg->account : "its account");
			break;
		}
		if (sg->code)
			ev_add(ev, "%zu x SCM %u: %s: %u %s (%s)", sg->count, sg->event_id, what,
			       sg->code, winerr_text(sg->code), f->w.clause);
		else
			ev_add(ev, "%zu x SCM %u: %s (%s)", sg->count, sg->event_id, what,
			       f->w.clause);
	}
	if (f->scm.overflow)
		ev_add(ev, "%zu more SCM events naming Exchange services (%s)", f->scm.overflow,
		       f->w.clause);
}

/* Account lines, one account at a time: local (when it puts the host at
 * risk), gone, or short of rights. */
static void add_accounts(struct evidence *ev, const struct status_rules *r,
			 const Exfleet__Snapshot *snap, int is_dc)
{
	for (size_t i = 0; i < snap->n_services; i++) {
		struct account a;
		if (!account_at(r, snap, i, &a))
			continue;
		if (a.local && !is_dc) {
			struct names l = {.n = 0};
			for (size_t j = i; j < snap->n_services; j++) {
				const Exfleet__Service *t = watched_at(r, snap, j);
				if (t && ieq(t->logon_account, a.name))
					names_add(&l, str(t->name));
			}
			ev_add(ev, "%s %s on as local account %s: promotion will delete it",
			       names_text(&l), l.n == 1 ? "logs" : "log", a.name);
		}
		if (a.missing) {
			ev_add(ev, "%s no longer exists%s", a.name,
			       is_dc && a.local ? " (local account removed by promotion)" : "");
		} else if (a.n_lacking) {
			char list[512];
			size_t used = 0;
			list[0] = '\0';
			for (size_t k = 0; k < r->n_rights && used < sizeof(list); k++) {
				if (!lacks(r, snap, a.name, r->rights[k]))
					continue;
				int n = snprintf(list + used, sizeof(list) - used, "%s%s",
						 used ? ", " : "", str(r->rights[k]));
				used += n > 0 ? (size_t)n : 0;
			}
			ev_add(ev, "%s lacks %s", a.name, list);
		}
	}
}

/* Rights the agent could not read are neither held nor lacking: say so
 * rather than let a summary claim them. */
static void add_rights_unknown(struct evidence *ev, const struct status_rules *r,
			       const Exfleet__Snapshot *snap)
{
	for (size_t i = 0; i < snap->n_services; i++) {
		struct account a;
		if (account_at(r, snap, i, &a) && !a.missing && !a.rights_known)
			ev_add(ev, "rights of %s could not be read: %u %s", a.name, a.rights_error,
			       winerr_text(a.rights_error));
	}
}

static void add_summary(struct evidence *ev, const struct status_rules *r, const struct findings *f)
{
	if (f->n_watched == 0)
		ev_add(ev, "none of the %zu watched Exchange services is installed", r->n_services);
	else if (f->n_checked == 0)
		ev_add(ev, "all %zu Exchange services running", f->n_watched);
	else if (f->n_checked == 1)
		ev_add(ev, "all %zu Exchange services running; %s holds every required right",
		       f->n_watched, f->checked);
	else
		ev_add(ev,
		       "all %zu Exchange services running; their %zu accounts hold every "
		       "required right",
		       f->n_watched, f->n_checked);
}

static enum host_status decide(const struct status_input *in, const struct findings *f)
{
	if (in->repair_in_flight)
		return HOST_REPAIRING;
	/* Without host state nothing can be vouched for: an admin should see
	 * this host as needing a look, not as done. */
	if (!in->snapshot)
		return HOST_DEGRADED;
	if (in->repaired_at_ms > 0 && f->n_watched > 0 && f->n_down == 0 && f->n_missing == 0 &&
	    f->n_lacking == 0 && f->n_auth_since_repair > 0)
		return HOST_NEEDS_SP_REINSTALL;
	if (f->is_dc &&
	    (f->n_logon_failed || f->scm.total || f->n_auth || f->n_missing || f->n_lacking))
		return HOST_AFFECTED;
	if (!f->is_dc && (f->n_local || f->n_missing || f->n_lacking))
		return HOST_AT_RISK;
	if (f->n_down || f->n_auth)
		return HOST_DEGRADED;
	if (in->was_affected && in->repaired_at_ms > 0)
		return HOST_REPAIRED;
	return HOST_HEALTHY;
}

void status_classify(const struct status_rules *rules, const struct status_input *in,
		     struct status_result *out)
{
	struct findings f;
	struct evidence ev = {.out = out};
	const Exfleet__Snapshot *snap = in->snapshot;
	char t[TIME_LEN], clause[CLAUSE_LEN];

	memset(out, 0, sizeof(*out));
	find(rules, in, &f);
	out->status = decide(in, &f);
	switch (out->status) {
	case HOST_REPAIRING:
		ev_add(&ev, "repair command %s in flight", in->repair_in_flight);
		break;
	case HOST_NEEDS_SP_REINSTALL:
		fmt_time(in->repaired_at_ms, t);
		snprintf(clause, sizeof(clause), "since the repair at %s", t);
		add_auth(&ev, rules, in, in->repaired_at_ms, clause,
			 ": reinstall the service pack");
		if (snap->service_pack_needs_reapply && str(snap->exchange_version)[0])
			ev_add(&ev, "the agent reports Exchange %s SP%u needs its service pack "
				    "reapplied",
			       snap->exchange_version, snap->exchange_service_pack);
		else if (snap->service_pack_needs_reapply)
			ev_add(&ev, "the agent reports the service pack needs reapplying");
		break;
	case HOST_AFFECTED:
		/* What made it AFFECTED first; then the rest of the outage
		 * (dependents stopped with 1068, say), so the admin sees it whole. */
		add_down(&ev, rules, snap, DOWN_LOGON);
		add_scm(&ev, rules, &f);
		add_auth(&ev, rules, in, f.w.start, f.w.clause, "");
		add_accounts(&ev, rules, snap, 1);
		add_down(&ev, rules, snap, DOWN_OTHER);
		add_rights_unknown(&ev, rules, snap);
		break;
	case HOST_AT_RISK:
		add_accounts(&ev, rules, snap, 0);
		add_down(&ev, rules, snap, DOWN_ALL);
		add_auth(&ev, rules, in, f.w.start, f.w.clause, "");
		add_rights_unknown(&ev, rules, snap);
		break;
	case HOST_DEGRADED:
		if (!snap)
			ev_add(&ev, "no host state received yet");
		else
			add_down(&ev, rules, snap, DOWN_ALL);
		add_auth(&ev, rules, in, f.w.start, f.w.clause, "");
		if (snap)
			add_rights_unknown(&ev, rules, snap);
		break;
	case HOST_REPAIRED:
		fmt_time(in->repaired_at_ms, t);
		ev_add(&ev, "repaired at %s; no problem since", t);
		add_summary(&ev, rules, &f);
		add_rights_unknown(&ev, rules, snap);
		break;
	case HOST_HEALTHY:
		add_summary(&ev, rules, &f);
		add_rights_unknown(&ev, rules, snap);
		break;
	}
	ev_finish(&ev);
}

/* ---- names, rules, connectivity ---- */

const char *host_status_name(enum host_status s)
{
	return (unsigned)s < N_OF(status_names) ? status_names[s] : "UNKNOWN";
}

int host_status_parse(const char *name)
{
	for (size_t i = 0; name && i < N_OF(status_names); i++)
		if (ieq(name, status_names[i]))
			return (int)i;
	return -1;
}

const char *connectivity_name(enum connectivity c)
{
	return (unsigned)c < N_OF(connectivity_names) ? connectivity_names[c] : "UNKNOWN";
}

enum connectivity connectivity_of(int64_t last_seen_ms, int session_open, int64_t now_ms,
				  uint64_t heartbeat_ms)
{
	if (last_seen_ms == 0)
		return CONN_NEVER_SEEN;
	if (!session_open)
		return CONN_OFFLINE;
	if (heartbeat_ms == 0 || now_ms <= last_seen_ms)
		return CONN_ONLINE;
	uint64_t silent = (uint64_t)now_ms - (uint64_t)last_seen_ms;
	uint64_t limit = heartbeat_ms > UINT64_MAX / 3 ? UINT64_MAX : 3 * heartbeat_ms;
	return silent <= limit ? CONN_ONLINE : CONN_OFFLINE;
}

void status_rules_default(struct status_rules *r)
{
	r->services = default_services;
	r->n_services = N_OF(default_services);
	r->auth = default_auth;
	r->n_auth = N_OF(default_auth);
	r->rights = default_rights;
	r->n_rights = N_OF(default_rights);
	r->retention_ms = 7 * DAY_MS;
}
