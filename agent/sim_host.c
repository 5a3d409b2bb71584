/* The simulated Exchange 5.5 host: its JSON file and its Windows behaviours.
 * The file format and the behaviours are documented in sim_host.h. */
#include "sim_host.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <uv.h>

#include "log.h"
#include "probe.h"
#include "util.h"

#define NAME_MAX_LEN 256      /* service, source and account-reference names */
#define TEXT_MAX_LEN 32768    /* event messages, insertion strings */
#define LIST_MAX 64           /* rights, dependencies, insertion strings */
#define PATH_LEN 160          /* JSON paths in error messages */
#define NOT_TRIED UINT32_MAX

static const char *const role_names[] = {"standalone_server", "member_server", "backup_dc",
					 "primary_dc", NULL};
static const char *const state_names[] = {"stopped", "start_pending", "stop_pending", "running",
					  "paused", NULL};
static const char *const start_type_names[] = {"boot", "system", "auto", "demand", "disabled",
					       NULL};
static const char *const event_type_names[] = {"error", "warning", "information",
					       "audit_success", "audit_failure", NULL};
static const char *const log_names[] = {"System", "Application", "Security", NULL};

const char *const sim_right_names[] = {
	"SeAssignPrimaryTokenPrivilege", "SeAuditPrivilege", "SeBackupPrivilege",
	"SeChangeNotifyPrivilege", "SeCreatePagefilePrivilege", "SeCreatePermanentPrivilege",
	"SeCreateTokenPrivilege", "SeDebugPrivilege", "SeEnableDelegationPrivilege",
	"SeIncreaseBasePriorityPrivilege", "SeIncreaseQuotaPrivilege", "SeLoadDriverPrivilege",
	"SeLockMemoryPrivilege", "SeMachineAccountPrivilege", "SeProfileSingleProcessPrivilege",
	"SeRemoteShutdownPrivilege", "SeRestorePrivilege", "SeSecurityPrivilege",
	"SeShutdownPrivilege", "SeSyncAgentPrivilege", "SeSystemEnvironmentPrivilege",
	"SeSystemProfilePrivilege", "SeSystemtimePrivilege", "SeTakeOwnershipPrivilege",
	"SeTcbPrivilege", "SeUndockPrivilege", "SeUnsolicitedInputPrivilege",
	"SeBatchLogonRight", "SeInteractiveLogonRight", "SeNetworkLogonRight",
	"SeServiceLogonRight", "SeDenyBatchLogonRight", "SeDenyInteractiveLogonRight",
	"SeDenyNetworkLogonRight", "SeDenyServiceLogonRight", NULL,
};

static const char *name_at(const char *const *names, unsigned i)
{
	for (unsigned k = 0; names[k]; k++)
		if (k == i)
			return names[k];
	return NULL;
}

const char *sim_role_name(enum sim_role role)
{
	return name_at(role_names, (unsigned)role);
}

const char *sim_state_name(enum sim_state state)
{
	return name_at(state_names, (unsigned)state);
}

const char *sim_start_type_name(enum sim_start_type type)
{
	return name_at(start_type_names, (unsigned)type);
}

const char *sim_event_type_name(enum sim_event_type type)
{
	return name_at(event_type_names, (unsigned)type);
}

/* The canonical spelling of a right, or NULL (Windows compares them
 * case-insensitively). */
static const char *right_canonical(const char *right)
{
	for (size_t i = 0; sim_right_names[i]; i++)
		if (strcasecmp(sim_right_names[i], right) == 0)
			return sim_right_names[i];
	return NULL;
}

/* ---- small helpers ---- */

static int strings_push(struct sim_strings *s, const char *value)
{
	char *copy = strdup(value);
	if (!copy)
		return UV_ENOMEM;
	char **grown = realloc(s->v, (s->n + 1) * sizeof(*grown));
	if (!grown) {
		free(copy);
		return UV_ENOMEM;
	}
	s->v = grown;
	s->v[s->n++] = copy;
	return 0;
}

static int strings_contains(const struct sim_strings *s, const char *value)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcasecmp(s->v[i], value) == 0)
			return 1;
	return 0;
}

void sim_strings_free_array(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void strings_clear(struct sim_strings *s)
{
	sim_strings_free_array(s->v, s->n);
	s->v = NULL;
	s->n = 0;
}

/* Replaces *dst with a copy of src; 0 or UV_ENOMEM (then *dst is unchanged). */
static int replace_string(char **dst, const char *src)
{
	char *copy = strdup(src);
	if (!copy)
		return UV_ENOMEM;
	free(*dst);
	*dst = copy;
	return 0;
}

/* Event and role times are kept in whole seconds, as the file stores them. */
static int64_t now_seconds_ms(void)
{
	int64_t ms = util_now_ms();
	return ms - ms % 1000;
}

/* ---- random numbers ---- */

void sim_rng_seed(struct sim_rng *r, uint64_t seed, uint64_t stream)
{
	r->state = seed ^ (stream * 0xd1342543de82ef95ull);
	sim_rng_next(r);
}

uint64_t sim_rng_next(struct sim_rng *r)
{
	uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t sim_rng_below(struct sim_rng *r, uint64_t bound)
{
	/* Rejection keeps it unbiased; the loop almost never repeats. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
	uint64_t x;
	do
		x = sim_rng_next(r);
	while (x >= limit);
	return x % bound;
}

/* ---- passwords ---- */

int sim_password_hash(struct sim_password *pw, const char *password, const uint8_t *salt)
{
	if (salt)
		memcpy(pw->salt, salt, SIM_SALT_LEN);
	else if (RAND_bytes(pw->salt, SIM_SALT_LEN) != 1)
		return UV_EIO;
	int rc = UV_EIO;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	if (!md)
		return UV_ENOMEM;
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, pw->salt, SIM_SALT_LEN) != 1 ||
	    EVP_DigestUpdate(md, password, strlen(password)) != 1 ||
	    EVP_DigestFinal_ex(md, pw->sha256, &len) != 1 || len != sizeof(pw->sha256))
		goto out;
	pw->set = 1;
	rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

int sim_password_matches(const struct sim_password *pw, const char *password)
{
	struct sim_password probe;
	if (!pw->set || sim_password_hash(&probe, password ? password : "", pw->salt) < 0)
		return 0;
	return CRYPTO_memcmp(probe.sha256, pw->sha256, sizeof(pw->sha256)) == 0;
}

/* A service's configured password and its account's: the service's is hashed
 * with the account's salt when configured, so equal hashes mean equal
 * passwords, and a later password change (new salt) no longer matches. */
static int password_same(const struct sim_password *a, const struct sim_password *b)
{
	return a->set && b->set && CRYPTO_memcmp(a->salt, b->salt, SIM_SALT_LEN) == 0 &&
	       CRYPTO_memcmp(a->sha256, b->sha256, sizeof(a->sha256)) == 0;
}

/* ---- times: "2026-11-29T10:02:11Z" ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static int parse_time(const char *s, int64_t *ms)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";
	if (strlen(s) != sizeof(shape) - 1)
		return -1;
	for (size_t i = 0; shape[i]; i++) {
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			return -1;
	}
	unsigned v[6];
	const int at[6] = {0, 5, 8, 11, 14, 17}, width[6] = {4, 2, 2, 2, 2, 2};
	for (int k = 0; k < 6; k++) {
		v[k] = 0;
		for (int j = 0; j < width[k]; j++)
			v[k] = v[k] * 10 + (unsigned)(s[at[k] + j] - '0');
	}
	static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (v[0] < 1980 || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > mdays[v[1] - 1] ||
	    v[3] > 23 || v[4] > 59 || v[5] > 59)
		return -1;
	int leap = (v[0] % 4 == 0 && v[0] % 100 != 0) || v[0] % 400 == 0;
	if (v[1] == 2 && v[2] == 29 && !leap)
		return -1;
	int64_t days = days_from_civil(v[0], v[1], v[2]);
	*ms = ((days * 24 + v[3]) * 60 + v[4]) * 60000 + (int64_t)v[5] * 1000;
	return 0;
}

/* ---- the host in memory ---- */

static void account_free(struct sim_account *a)
{
	free(a->name);
	strings_clear(&a->rights);
}

static void service_free(struct sim_service *s)
{
	free(s->name);
	free(s->display_name);
	free(s->logon_account);
	strings_clear(&s->dependencies);
	strings_clear(&s->required_rights);
}

static void event_free(struct sim_event *e)
{
	free(e->log);
	free(e->source);
	free(e->category_name);
	strings_clear(&e->insertion_strings);
	free(e->message);
	free(e->computer);
}

void sim_host_free(struct sim_host *h)
{
	if (!h)
		return;
	free(h->computer_name);
	free(h->domain);
	for (size_t i = 0; i < h->n_local_accounts; i++)
		account_free(&h->local_accounts[i]);
	free(h->local_accounts);
	for (size_t i = 0; i < h->n_domain_accounts; i++)
		account_free(&h->domain_accounts[i]);
	free(h->domain_accounts);
	for (size_t i = 0; i < h->n_services; i++)
		service_free(&h->services[i]);
	free(h->services);
	free(h->exchange_version);
	for (size_t i = 0; i < h->n_events; i++)
		event_free(&h->events[i]);
	free(h->events);
	free(h);
}

struct sim_host *sim_host_new(const char *computer_name, const char *domain, enum sim_role role)
{
	struct sim_host *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->computer_name = strdup(computer_name);
	h->domain = strdup(domain);
	h->exchange_version = strdup("5.5.2650"); /* SP3 */
	if (!h->computer_name || !h->domain || !h->exchange_version) {
		sim_host_free(h);
		return NULL;
	}
	h->role = role;
	h->exchange_service_pack = 3;
	h->next_record_number = 1;
	return h;
}

int sim_host_is_dc(const struct sim_host *h)
{
	return h->role == SIM_ROLE_BACKUP_DC || h->role == SIM_ROLE_PRIMARY_DC;
}

static struct sim_account *find_account(struct sim_account *list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(list[i].name, name) == 0)
			return &list[i];
	return NULL;
}

static size_t service_index(const struct sim_host *h, const char *name)
{
	for (size_t i = 0; i < h->n_services; i++)
		if (strcasecmp(h->services[i].name, name) == 0)
			return i;
	return SIZE_MAX;
}

struct sim_service *sim_host_find_service(const struct sim_host *h, const char *name)
{
	size_t i = service_index(h, name);
	return i == SIZE_MAX ? NULL : &h->services[i];
}

enum sim_account_status sim_host_resolve(const struct sim_host *h, const char *account,
					 struct sim_account **acct)
{
	struct sim_account *found = NULL;
	if (acct)
		*acct = NULL;
	if (!account || !*account)
		return SIM_ACCOUNT_MISSING;
	if (strcasecmp(account, "LocalSystem") == 0)
		return SIM_ACCOUNT_BUILTIN;
	/* A standalone server is in a workgroup: it cannot resolve domain accounts. */
	int domain_reachable = h->role != SIM_ROLE_STANDALONE_SERVER;
	const char *bs = strchr(account, '\\');
	if (!bs) {
		if (!sim_host_is_dc(h))
			found = find_account(h->local_accounts, h->n_local_accounts, account);
		if (!found && domain_reachable)
			found = find_account(h->domain_accounts, h->n_domain_accounts, account);
	} else {
		size_t plen = (size_t)(bs - account);
		const char *name = bs + 1;
		if (plen == 12 && strncasecmp(account, "NT AUTHORITY", 12) == 0)
			return SIM_ACCOUNT_BUILTIN;
		int local = (plen == 1 && account[0] == '.') ||
			    (plen == strlen(h->computer_name) &&
			     strncasecmp(account, h->computer_name, plen) == 0);
		int domain = plen == strlen(h->domain) && strncasecmp(account, h->domain, plen) == 0;
		/* A DC has no SAM: a service still naming a local account
		 * refers to an account that no longer exists. */
		if (local && !sim_host_is_dc(h))
			found = find_account(h->local_accounts, h->n_local_accounts, name);
		else if (domain && domain_reachable)
			found = find_account(h->domain_accounts, h->n_domain_accounts, name);
	}
	if (!found)
		return SIM_ACCOUNT_MISSING;
	if (acct)
		*acct = found;
	return SIM_ACCOUNT_EXISTS;
}

static int account_has_right(enum sim_account_status st, const struct sim_account *a,
			     const char *right)
{
	if (st == SIM_ACCOUNT_BUILTIN)
		return 1;
	return a && strings_contains(&a->rights, right);
}

uint32_t sim_host_account_rights(const struct sim_host *h, const char *account, char ***rights,
				 size_t *n)
{
	struct sim_account *a;
	struct sim_strings out = {0};
	enum sim_account_status st = sim_host_resolve(h, account, &a);
	*rights = NULL;
	*n = 0;
	if (st == SIM_ACCOUNT_MISSING)
		return WIN32_NONE_MAPPED;
	if (st == SIM_ACCOUNT_BUILTIN) {
		/* Every right but the Deny ones. */
		for (size_t i = 0; sim_right_names[i]; i++)
			if (strncmp(sim_right_names[i], "SeDeny", 6) != 0 &&
			    strings_push(&out, sim_right_names[i]) < 0)
				goto oom;
	} else {
		for (size_t i = 0; i < a->rights.n; i++)
			if (strings_push(&out, a->rights.v[i]) < 0)
				goto oom;
	}
	*rights = out.v;
	*n = out.n;
	return 0;
oom:
	strings_clear(&out);
	return WIN32_NOT_ENOUGH_MEMORY;
}

/* ---- building a host ---- */

static int valid_netbios(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 15)
		return 0;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return 0;
	return 1;
}

/* SAM account names: 1..20 characters, none of "/\[]:;|=,+*?<>@ or controls. */
static int valid_account_name(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 20)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f || strchr("\"/\\[]:;|=,+*?<>@", *p))
			return 0;
	return 1;
}

static int valid_service_name(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > NAME_MAX_LEN)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == '/' || *p == '\\')
			return 0;
	return 1;
}

int sim_host_add_account(struct sim_host *h, int local, const char *name, const char *password,
			 const uint8_t *salt, const char *const *rights, size_t n_rights)
{
	struct sim_account **list = local ? &h->local_accounts : &h->domain_accounts;
	size_t *n = local ? &h->n_local_accounts : &h->n_domain_accounts;
	if (!valid_account_name(name) || find_account(*list, *n, name) || *n >= SIM_ACCOUNTS_MAX ||
	    (local && sim_host_is_dc(h)))
		return UV_EINVAL;
	struct sim_account a = {0};
	int rc = UV_ENOMEM;
	if (!(a.name = strdup(name)))
		goto fail;
	if ((rc = sim_password_hash(&a.password, password, salt)) < 0)
		goto fail;
	for (size_t i = 0; i < n_rights; i++) {
		const char *r = right_canonical(rights[i]);
		rc = UV_EINVAL;
		if (!r || strings_contains(&a.rights, r))
			goto fail;
		if ((rc = strings_push(&a.rights, r)) < 0)
			goto fail;
	}
	struct sim_account *grown = realloc(*list, (*n + 1) * sizeof(*grown));
	rc = UV_ENOMEM;
	if (!grown)
		goto fail;
	*list = grown;
	grown[(*n)++] = a;
	return 0;
fail:
	account_free(&a);
	return rc;
}

/* Hashes password for a service logging on as account: with the account's
 * salt when it exists, so a start can compare hashes. */
static int service_password(const struct sim_host *h, const char *account, const char *password,
			    struct sim_password *out)
{
	struct sim_account *a;
	memset(out, 0, sizeof(*out));
	if (!password)
		return 0;
	if (sim_host_resolve(h, account, &a) == SIM_ACCOUNT_EXISTS)
		return sim_password_hash(out, password, a->password.salt);
	return sim_password_hash(out, password, NULL);
}

int sim_host_add_service(struct sim_host *h, const struct sim_service_spec *spec)
{
	if (!valid_service_name(spec->name) || service_index(h, spec->name) != SIZE_MAX ||
	    h->n_services >= SIM_SERVICES_MAX || !spec->logon_account || !*spec->logon_account ||
	    spec->n_dependencies > LIST_MAX || spec->n_required_rights > LIST_MAX)
		return UV_EINVAL;
	/* Dependencies must already exist, which also rules out cycles. */
	for (size_t i = 0; i < spec->n_dependencies; i++)
		if (service_index(h, spec->dependencies[i]) == SIZE_MAX)
			return UV_EINVAL;
	struct sim_service s = {0};
	int rc = UV_ENOMEM;
	s.state = spec->state;
	s.start_type = spec->start_type;
	if (!(s.name = strdup(spec->name)) ||
	    !(s.display_name = strdup(spec->display_name ? spec->display_name : spec->name)) ||
	    !(s.logon_account = strdup(spec->logon_account)))
		goto fail;
	if ((rc = service_password(h, spec->logon_account, spec->password, &s.password)) < 0)
		goto fail;
	for (size_t i = 0; i < spec->n_dependencies; i++)
		if ((rc = strings_push(&s.dependencies, spec->dependencies[i])) < 0)
			goto fail;
	for (size_t i = 0; i < spec->n_required_rights; i++) {
		const char *r = right_canonical(spec->required_rights[i]);
		rc = UV_EINVAL;
		if (!r)
			goto fail;
		if ((rc = strings_push(&s.required_rights, r)) < 0)
			goto fail;
	}
	struct sim_service *grown = realloc(h->services, (h->n_services + 1) * sizeof(*grown));
	rc = UV_ENOMEM;
	if (!grown)
		goto fail;
	h->services = grown;
	grown[h->n_services++] = s;
	return 0;
fail:
	service_free(&s);
	return rc;
}

/* ---- UTF-8: every string that reaches the file must be valid ---- */

/* Length of the valid UTF-8 sequence at p (at most left bytes), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
	size_t n;
	if (p[0] < 0x80)
		return 1;
	if ((p[0] & 0xe0) == 0xc0)
		n = 2;
	else if ((p[0] & 0xf0) == 0xe0)
		n = 3;
	else if ((p[0] & 0xf8) == 0xf0)
		n = 4;
	else
		return 0;
	uint32_t cp = p[0] & (0x7fu >> n);
	if (n > left)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
	if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* A copy of at most max bytes of s, invalid UTF-8 replaced by '?'. */
static char *dup_text(const char *s, size_t max)
{
	size_t len = strnlen(s, max);
	char *out = malloc(len + 1);
	if (!out)
		return NULL;
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		size_t n = utf8_seq(p + i, len - i);
		if (n == 0) {
			out[i++] = '?';
			continue;
		}
		memcpy(out + i, p + i, n);
		i += n;
	}
	out[len] = '\0';
	return out;
}

/* ---- loading: every value checked, errors name the JSON path ---- */

struct jctx {
	const char *file;
	char *err;
	size_t errlen;
};

enum { JOPT = 0, JREQ = 1, JNULL = 2 };

static int jfail(struct jctx *c, const char *path, const char *fmt, ...) LOG_PRINTF(3, 4);
static int jfail(struct jctx *c, const char *path, const char *fmt, ...)
{
	char msg[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s: %s: %s", c->file, path, msg);
	return UV_EINVAL;
}

static int joom(struct jctx *c)
{
	snprintf(c->err, c->errlen, "%s: out of memory", c->file);
	return UV_ENOMEM;
}

static const char *jtype(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE: return "true";
	case JSON_FALSE: return "false";
	case JSON_NULL: return "null";
	}
	return "a value";
}

static void jkey(char *out, const char *path, const char *key)
{
	snprintf(out, PATH_LEN, "%s.%s", path, key);
}

static void jindex(char *out, const char *path, size_t i)
{
	snprintf(out, PATH_LEN, "%s[%zu]", path, i);
}

static void join_names(char *out, size_t len, const char *const *names)
{
	size_t used = 0;
	out[0] = '\0';
	for (size_t i = 0; names[i] && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s", i ? ", " : "", names[i]);
}

/* v must be an object whose keys are all in keys. */
static int jobject(struct jctx *c, json_t *v, const char *path, const char *const *keys)
{
	const char *key;
	json_t *val;
	if (!json_is_object(v))
		return jfail(c, path, "expected an object, found %s", jtype(v));
	json_object_foreach(v, key, val) {
		size_t i = 0;
		while (keys[i] && strcmp(keys[i], key) != 0)
			i++;
		if (!keys[i]) {
			char sub[PATH_LEN], list[256];
			jkey(sub, path, key);
			join_names(list, sizeof(list), keys);
			return jfail(c, sub, "unknown key (expected one of %s)", list);
		}
	}
	return 0;
}

/* The member key of obj in *out, NULL when absent (or null with JNULL). */
static int jmember(struct jctx *c, json_t *obj, const char *path, const char *key, int flags,
		   json_t **out, char *sub)
{
	jkey(sub, path, key);
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v)
		return (flags & JREQ) ? jfail(c, sub, "required key is missing") : 0;
	if (json_is_null(v))
		return (flags & JNULL) ? 0 : jfail(c, sub, "must not be null");
	*out = v;
	return 0;
}

static int jstring(struct jctx *c, json_t *obj, const char *path, const char *key, int flags,
		   size_t max, char **out)
{
	char sub[PATH_LEN];
	json_t *v;
	int rc = jmember(c, obj, path, key, flags, &v, sub);
	if (rc < 0 || !v)
		return rc;
	if (!json_is_string(v))
		return jfail(c, sub, "expected a string, found %s", jtype(v));
	if (json_string_length(v) > max)
		return jfail(c, sub, "longer than %zu bytes", max);
	if (!(*out = strdup(json_string_value(v))))
		return joom(c);
	return 0;
}

static int juint(struct jctx *c, json_t *obj, const char *path, const char *key, int flags,
		 uint64_t min, uint64_t max, uint64_t def, uint64_t *out)
{
	char sub[PATH_LEN];
	json_t *v;
	int rc = jmember(c, obj, path, key, flags, &v, sub);
	*out = def;
	if (rc < 0 || !v)
		return rc;
	if (!json_is_integer(v))
		return jfail(c, sub, "expected an integer, found %s", jtype(v));
	json_int_t x = json_integer_value(v);
	if (x < 0 || (uint64_t)x < min || (uint64_t)x > max)
		return jfail(c, sub, "%lld is not in %llu..%llu", (long long)x,
			     (unsigned long long)min, (unsigned long long)max);
	*out = (uint64_t)x;
	return 0;
}

static int jbool(struct jctx *c, json_t *obj, const char *path, const char *key, int *out)
{
	char sub[PATH_LEN];
	json_t *v;
	int rc = jmember(c, obj, path, key, JREQ, &v, sub);
	if (rc < 0)
		return rc;
	if (!json_is_boolean(v))
		return jfail(c, sub, "expected true or false, found %s", jtype(v));
	*out = json_is_true(v);
	return 0;
}

static int jenum(struct jctx *c, json_t *obj, const char *path, const char *key,
		 const char *const *names, int *out)
{
	char sub[PATH_LEN], list[256];
	json_t *v;
	int rc = jmember(c, obj, path, key, JREQ, &v, sub);
	if (rc < 0)
		return rc;
	if (!json_is_string(v))
		return jfail(c, sub, "expected a string, found %s", jtype(v));
	const char *s = json_string_value(v);
	for (int i = 0; names[i]; i++) {
		if (strcmp(names[i], s) == 0) {
			*out = i;
			return 0;
		}
	}
	join_names(list, sizeof(list), names);
	return jfail(c, sub, "'%.64s' is not one of %s", s, list);
}

enum jlist_kind { JLIST_TEXT, JLIST_RIGHTS, JLIST_SERVICES };

static int jstrings(struct jctx *c, json_t *obj, const char *path, const char *key, int flags,
		    enum jlist_kind kind, struct sim_strings *out)
{
	char sub[PATH_LEN], item[PATH_LEN];
	json_t *v;
	int rc = jmember(c, obj, path, key, flags, &v, sub);
	if (rc < 0 || !v)
		return rc;
	if (!json_is_array(v))
		return jfail(c, sub, "expected an array, found %s", jtype(v));
	if (json_array_size(v) > LIST_MAX)
		return jfail(c, sub, "more than %d entries", LIST_MAX);
	for (size_t i = 0; i < json_array_size(v); i++) {
		json_t *e = json_array_get(v, i);
		jindex(item, sub, i);
		if (!json_is_string(e))
			return jfail(c, item, "expected a string, found %s", jtype(e));
		const char *s = json_string_value(e);
		size_t max = kind == JLIST_TEXT ? TEXT_MAX_LEN : NAME_MAX_LEN;
		if (json_string_length(e) > max)
			return jfail(c, item, "longer than %zu bytes", max);
		if (kind == JLIST_RIGHTS && !right_canonical(s))
			return jfail(c, item, "'%.64s' is not a Windows 2000 user right or privilege",
				     s);
		if (kind == JLIST_RIGHTS && strcmp(right_canonical(s), s) != 0)
			return jfail(c, item, "'%.64s' is spelled %s", s, right_canonical(s));
		if (kind != JLIST_TEXT && strings_contains(out, s))
			return jfail(c, item, "'%.64s' is listed twice", s);
		if (kind == JLIST_SERVICES && !valid_service_name(s))
			return jfail(c, item, "'%.64s' is not a service name", s);
		if (strings_push(out, s) < 0)
			return joom(c);
	}
	return 0;
}

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static int jhex(struct jctx *c, json_t *obj, const char *path, const char *key, uint8_t *out,
		size_t len)
{
	char sub[PATH_LEN];
	json_t *v;
	int rc = jmember(c, obj, path, key, JREQ, &v, sub);
	if (rc < 0)
		return rc;
	if (!json_is_string(v))
		return jfail(c, sub, "expected a string, found %s", jtype(v));
	const char *s = json_string_value(v);
	if (json_string_length(v) != 2 * len)
		return jfail(c, sub, "expected %zu hexadecimal digits", 2 * len);
	for (size_t i = 0; i < len; i++) {
		int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return jfail(c, sub, "expected %zu hexadecimal digits", 2 * len);
		out[i] = (uint8_t)(hi * 16 + lo);
	}
	return 0;
}

static int jpassword(struct jctx *c, json_t *obj, const char *path, const char *key, int flags,
		     struct sim_password *out)
{
	static const char *const keys[] = {"salt", "sha256", NULL};
	char sub[PATH_LEN];
	json_t *v;
	int rc = jmember(c, obj, path, key, flags, &v, sub);
	if (rc < 0 || !v)
		return rc;
	if ((rc = jobject(c, v, sub, keys)) < 0 ||
	    (rc = jhex(c, v, sub, "salt", out->salt, SIM_SALT_LEN)) < 0 ||
	    (rc = jhex(c, v, sub, "sha256", out->sha256, sizeof(out->sha256))) < 0)
		return rc;
	out->set = 1;
	return 0;
}

static int jtime(struct jctx *c, json_t *obj, const char *path, const char *key, int flags,
		 int64_t *out)
{
	char sub[PATH_LEN];
	json_t *v;
	int rc = jmember(c, obj, path, key, flags, &v, sub);
	*out = 0;
	if (rc < 0 || !v)
		return rc;
	if (!json_is_string(v))
		return jfail(c, sub, "expected a string, found %s", jtype(v));
	if (parse_time(json_string_value(v), out) < 0)
		return jfail(c, sub, "'%.64s' is not a UTC time like 2026-11-29T10:02:11Z (1980 or later)",
			     json_string_value(v));
	return 0;
}

/* The array member key, checked to hold at most max entries. */
static int jarray(struct jctx *c, json_t *obj, const char *path, const char *key, size_t max,
		  json_t **out, char *sub)
{
	int rc = jmember(c, obj, path, key, JREQ, out, sub);
	if (rc < 0)
		return rc;
	if (!json_is_array(*out))
		return jfail(c, sub, "expected an array, found %s", jtype(*out));
	if (json_array_size(*out) > max)
		return jfail(c, sub, "more than %zu entries", max);
	return 0;
}

static int parse_account(struct jctx *c, json_t *v, const char *path, struct sim_account *a)
{
	static const char *const keys[] = {"name", "password", "rights", NULL};
	char sub[PATH_LEN];
	int rc;
	if ((rc = jobject(c, v, path, keys)) < 0 ||
	    (rc = jstring(c, v, path, "name", JREQ, NAME_MAX_LEN, &a->name)) < 0)
		return rc;
	jkey(sub, path, "name");
	if (!valid_account_name(a->name))
		return jfail(c, sub, "'%.64s' is not an account name (1-20 characters, none of "
			     "\"/\\[]:;|=,+*?<>@)", a->name);
	if ((rc = jpassword(c, v, path, "password", JREQ, &a->password)) < 0 ||
	    (rc = jstrings(c, v, path, "rights", JREQ, JLIST_RIGHTS, &a->rights)) < 0)
		return rc;
	return 0;
}

static int parse_accounts(struct jctx *c, json_t *root, const char *key, struct sim_account **list,
			  size_t *n)
{
	char sub[PATH_LEN], item[PATH_LEN];
	json_t *arr;
	int rc = jarray(c, root, "$", key, SIM_ACCOUNTS_MAX, &arr, sub);
	if (rc < 0)
		return rc;
	size_t count = json_array_size(arr);
	if (!(*list = calloc(count ? count : 1, sizeof(**list))))
		return joom(c);
	for (size_t i = 0; i < count; i++) {
		jindex(item, sub, i);
		*n = i + 1;
		if ((rc = parse_account(c, json_array_get(arr, i), item, &(*list)[i])) < 0)
			return rc;
		if (find_account(*list, i, (*list)[i].name)) {
			char name[PATH_LEN];
			jkey(name, item, "name");
			return jfail(c, name, "account '%s' is listed twice", (*list)[i].name);
		}
	}
	return 0;
}

static int parse_service(struct jctx *c, json_t *v, const char *path, struct sim_service *s)
{
	static const char *const keys[] = {"name", "display_name", "state", "start_type",
					   "logon_account", "password", "win32_exit_code",
					   "service_exit_code", "dependencies", "required_rights",
					   NULL};
	char sub[PATH_LEN];
	int rc, state, start;
	uint64_t code;
	if ((rc = jobject(c, v, path, keys)) < 0 ||
	    (rc = jstring(c, v, path, "name", JREQ, NAME_MAX_LEN, &s->name)) < 0)
		return rc;
	jkey(sub, path, "name");
	if (!valid_service_name(s->name))
		return jfail(c, sub, "'%.64s' is not a service name (no '/', '\\' or control "
			     "characters)", s->name);
	if ((rc = jstring(c, v, path, "display_name", JREQ, NAME_MAX_LEN, &s->display_name)) < 0 ||
	    (rc = jenum(c, v, path, "state", state_names, &state)) < 0 ||
	    (rc = jenum(c, v, path, "start_type", start_type_names, &start)) < 0 ||
	    (rc = jstring(c, v, path, "logon_account", JREQ, NAME_MAX_LEN, &s->logon_account)) < 0)
		return rc;
	s->state = (enum sim_state)state;
	s->start_type = (enum sim_start_type)start;
	jkey(sub, path, "logon_account");
	if (!*s->logon_account)
		return jfail(c, sub, "must not be empty");
	if ((rc = jpassword(c, v, path, "password", JNULL, &s->password)) < 0)
		return rc;
	if ((rc = juint(c, v, path, "win32_exit_code", JOPT, 0, UINT32_MAX, 0, &code)) < 0)
		return rc;
	s->win32_exit_code = (uint32_t)code;
	if ((rc = juint(c, v, path, "service_exit_code", JOPT, 0, UINT32_MAX, 0, &code)) < 0)
		return rc;
	s->service_exit_code = (uint32_t)code;
	if ((rc = jstrings(c, v, path, "dependencies", JOPT, JLIST_SERVICES, &s->dependencies)) < 0 ||
	    (rc = jstrings(c, v, path, "required_rights", JOPT, JLIST_RIGHTS, &s->required_rights)) < 0)
		return rc;
	return 0;
}

/* Depth-first search for a dependency cycle; colour 1 = on the path. */
static int find_cycle(const struct sim_host *h, size_t i, uint8_t *colour)
{
	if (colour[i] == 1)
		return 1;
	if (colour[i] == 2)
		return 0;
	colour[i] = 1;
	const struct sim_service *s = &h->services[i];
	for (size_t d = 0; d < s->dependencies.n; d++)
		if (find_cycle(h, service_index(h, s->dependencies.v[d]), colour))
			return 1;
	colour[i] = 2;
	return 0;
}

static int check_dependencies(struct jctx *c, const struct sim_host *h)
{
	char sub[PATH_LEN];
	for (size_t i = 0; i < h->n_services; i++) {
		const struct sim_service *s = &h->services[i];
		for (size_t d = 0; d < s->dependencies.n; d++) {
			snprintf(sub, sizeof(sub), "$.services[%zu].dependencies[%zu]", i, d);
			size_t j = service_index(h, s->dependencies.v[d]);
			if (j == SIZE_MAX)
				return jfail(c, sub, "'%.64s' is not a service in this file",
					     s->dependencies.v[d]);
			if (j == i)
				return jfail(c, sub, "a service cannot depend on itself");
		}
	}
	uint8_t colour[SIM_SERVICES_MAX] = {0};
	for (size_t i = 0; i < h->n_services; i++) {
		if (find_cycle(h, i, colour)) {
			snprintf(sub, sizeof(sub), "$.services[%zu].dependencies", i);
			return jfail(c, sub, "dependency cycle through %s", h->services[i].name);
		}
	}
	return 0;
}

static int parse_services(struct jctx *c, json_t *root, struct sim_host *h)
{
	char sub[PATH_LEN], item[PATH_LEN];
	json_t *arr;
	int rc = jarray(c, root, "$", "services", SIM_SERVICES_MAX, &arr, sub);
	if (rc < 0)
		return rc;
	size_t count = json_array_size(arr);
	if (!(h->services = calloc(count ? count : 1, sizeof(*h->services))))
		return joom(c);
	for (size_t i = 0; i < count; i++) {
		jindex(item, sub, i);
		h->n_services = i + 1;
		if ((rc = parse_service(c, json_array_get(arr, i), item, &h->services[i])) < 0)
			return rc;
		if (service_index(h, h->services[i].name) != i) {
			char name[PATH_LEN];
			jkey(name, item, "name");
			return jfail(c, name, "service '%s' is listed twice", h->services[i].name);
		}
	}
	return check_dependencies(c, h);
}

static int parse_exchange(struct jctx *c, json_t *root, struct sim_host *h)
{
	static const char *const keys[] = {"version", "service_pack", "pop3_imap_broken", NULL};
	char sub[PATH_LEN];
	json_t *v;
	uint64_t sp;
	int rc;
	if ((rc = jmember(c, root, "$", "exchange", JREQ, &v, sub)) < 0 ||
	    (rc = jobject(c, v, sub, keys)) < 0 ||
	    (rc = jstring(c, v, sub, "version", JREQ, 64, &h->exchange_version)) < 0 ||
	    (rc = juint(c, v, sub, "service_pack", JREQ, 0, 99, 0, &sp)) < 0 ||
	    (rc = jbool(c, v, sub, "pop3_imap_broken", &h->pop3_imap_broken)) < 0)
		return rc;
	h->exchange_service_pack = (uint32_t)sp;
	return 0;
}

static int parse_event(struct jctx *c, json_t *v, const char *path, struct sim_event *e)
{
	static const char *const keys[] = {"record_number", "log", "source", "event_id", "type",
					   "category", "category_name", "time",
					   "insertion_strings", "message", "computer", NULL};
	uint64_t num;
	int rc, type, log;
	if ((rc = jobject(c, v, path, keys)) < 0 ||
	    (rc = juint(c, v, path, "record_number", JREQ, 1, UINT32_MAX - 1, 0, &num)) < 0)
		return rc;
	e->record_number = (uint32_t)num;
	if ((rc = jenum(c, v, path, "log", log_names, &log)) < 0)
		return rc;
	if (!(e->log = strdup(log_names[log])))
		return joom(c);
	if ((rc = jstring(c, v, path, "source", JREQ, NAME_MAX_LEN, &e->source)) < 0 ||
	    (rc = juint(c, v, path, "event_id", JREQ, 0, 65535, 0, &num)) < 0)
		return rc;
	e->event_id = (uint32_t)num;
	if ((rc = jenum(c, v, path, "type", event_type_names, &type)) < 0 ||
	    (rc = juint(c, v, path, "category", JREQ, 0, 65535, 0, &num)) < 0)
		return rc;
	e->type = (enum sim_event_type)type;
	e->category = (uint32_t)num;
	if ((rc = jstring(c, v, path, "category_name", JREQ, NAME_MAX_LEN, &e->category_name)) < 0 ||
	    (rc = jtime(c, v, path, "time", JREQ, &e->time_ms)) < 0 ||
	    (rc = jstrings(c, v, path, "insertion_strings", JOPT, JLIST_TEXT,
			   &e->insertion_strings)) < 0 ||
	    (rc = jstring(c, v, path, "message", JREQ, TEXT_MAX_LEN, &e->message)) < 0 ||
	    (rc = jstring(c, v, path, "computer", JREQ, NAME_MAX_LEN, &e->computer)) < 0)
		return rc;
	return 0;
}

/* Drops all but the newest keep records. */
static void trim_events(struct sim_host *h, size_t keep)
{
	if (h->n_events <= keep)
		return;
	size_t drop = h->n_events - keep;
	for (size_t i = 0; i < drop; i++)
		event_free(&h->events[i]);
	memmove(h->events, h->events + drop, keep * sizeof(*h->events));
	h->n_events = keep;
}

static int parse_event_log(struct jctx *c, json_t *root, struct sim_host *h)
{
	static const char *const keys[] = {"next_record_number", "records", NULL};
	char sub[PATH_LEN], list[PATH_LEN], item[PATH_LEN];
	json_t *v, *arr;
	uint64_t next;
	int rc;
	if ((rc = jmember(c, root, "$", "event_log", JREQ, &v, sub)) < 0 ||
	    (rc = jobject(c, v, sub, keys)) < 0 ||
	    (rc = juint(c, v, sub, "next_record_number", JREQ, 1, UINT32_MAX, 1, &next)) < 0 ||
	    (rc = jarray(c, v, sub, "records", SIZE_MAX / sizeof(struct sim_event), &arr, list)) < 0)
		return rc;
	h->next_record_number = (uint32_t)next;
	size_t count = json_array_size(arr);
	if (!(h->events = calloc(count ? count : 1, sizeof(*h->events))))
		return joom(c);
	h->events_cap = count ? count : 1;
	for (size_t i = 0; i < count; i++) {
		jindex(item, list, i);
		h->n_events = i + 1;
		struct sim_event *e = &h->events[i];
		if ((rc = parse_event(c, json_array_get(arr, i), item, e)) < 0)
			return rc;
		char num[PATH_LEN];
		jkey(num, item, "record_number");
		if (i > 0 && e->record_number <= e[-1].record_number)
			return jfail(c, num, "%u does not follow %u: record numbers must increase",
				     e->record_number, e[-1].record_number);
		if (e->record_number >= h->next_record_number)
			return jfail(c, num, "%u is not below next_record_number %u",
				     e->record_number, h->next_record_number);
	}
	trim_events(h, SIM_EVENTS_KEPT);
	return 0;
}

static int parse_host(struct jctx *c, json_t *root, struct sim_host *h)
{
	static const char *const keys[] = {"schema", "computer_name", "domain", "role",
					   "role_changed_at", "local_accounts", "domain_accounts",
					   "services", "exchange", "event_log", NULL};
	uint64_t schema;
	int rc, role;
	if ((rc = jobject(c, root, "$", keys)) < 0 ||
	    (rc = juint(c, root, "$", "schema", JREQ, 0, UINT32_MAX, 0, &schema)) < 0)
		return rc;
	if (schema != SIM_SCHEMA_VERSION)
		return jfail(c, "$.schema", "version %llu is not supported (this build reads %d)",
			     (unsigned long long)schema, SIM_SCHEMA_VERSION);
	if ((rc = jstring(c, root, "$", "computer_name", JREQ, 64, &h->computer_name)) < 0)
		return rc;
	if (!valid_netbios(h->computer_name))
		return jfail(c, "$.computer_name", "'%s' is not a NetBIOS name (1-15 of A-Z a-z 0-9 - _)",
			     h->computer_name);
	if ((rc = jstring(c, root, "$", "domain", JREQ, 64, &h->domain)) < 0)
		return rc;
	if (!valid_netbios(h->domain))
		return jfail(c, "$.domain", "'%s' is not a NetBIOS name (1-15 of A-Z a-z 0-9 - _)",
			     h->domain);
	if ((rc = jenum(c, root, "$", "role", role_names, &role)) < 0 ||
	    (rc = jtime(c, root, "$", "role_changed_at", JREQ | JNULL, &h->role_changed_at_ms)) < 0)
		return rc;
	h->role = (enum sim_role)role;
	if ((rc = parse_accounts(c, root, "local_accounts", &h->local_accounts,
				 &h->n_local_accounts)) < 0 ||
	    (rc = parse_accounts(c, root, "domain_accounts", &h->domain_accounts,
				 &h->n_domain_accounts)) < 0)
		return rc;
	if (sim_host_is_dc(h) && h->n_local_accounts > 0)
		return jfail(c, "$.local_accounts",
			     "a domain controller has no local (SAM) accounts; empty this list or "
			     "change the role");
	if ((rc = parse_services(c, root, h)) < 0 || (rc = parse_exchange(c, root, h)) < 0 ||
	    (rc = parse_event_log(c, root, h)) < 0)
		return rc;
	return 0;
}

int sim_host_load_buffer(const char *name, const char *data, size_t len, struct sim_host **out,
			 char *err, size_t errlen)
{
	struct jctx c = {name, err, errlen};
	json_error_t jerr;
	*out = NULL;
	err[0] = '\0';
	json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(err, errlen, "%s:%d:%d: JSON syntax error: %s", name, jerr.line,
			 jerr.column, jerr.text);
		return UV_EINVAL;
	}
	struct sim_host *h = calloc(1, sizeof(*h));
	int rc = h ? parse_host(&c, root, h) : joom(&c);
	json_decref(root);
	if (rc < 0) {
		sim_host_free(h);
		return rc;
	}
	*out = h;
	return 0;
}

int sim_host_load_file(const char *path, struct sim_host **out, char *err, size_t errlen)
{
	char *data = NULL;
	size_t len = 0;
	*out = NULL;
	int rc = util_read_file(path, SIM_FILE_MAX, &data, &len, err, errlen);
	if (rc < 0)
		return rc;
	rc = sim_host_load_buffer(path, data, len, out, err, errlen);
	free(data);
	return rc;
}

/* ---- saving ---- */

/* A JSON string; strings reach the host from files (valid UTF-8) or from
 * our own text, but a bad byte must never make a save fail. */
static json_t *jstr(const char *s)
{
	json_t *v = json_string(s);
	if (v)
		return v;
	char *clean = dup_text(s, strlen(s));
	if (!clean)
		return NULL;
	v = json_string(clean);
	free(clean);
	return v;
}

static json_t *jstr_list(const struct sim_strings *s)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < s->n; i++) {
		if (json_array_append_new(arr, jstr(s->v[i])) < 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

static json_t *jpassword_out(const struct sim_password *pw)
{
	char salt[2 * SIM_SALT_LEN + 1], hash[2 * sizeof(pw->sha256) + 1];
	if (!pw->set)
		return json_null();
	util_hex(pw->salt, SIM_SALT_LEN, salt);
	util_hex(pw->sha256, sizeof(pw->sha256), hash);
	return json_pack("{s:s, s:s}", "salt", salt, "sha256", hash);
}

static json_t *jtime_out(int64_t ms)
{
	char buf[32];
	if (ms == 0)
		return json_null();
	util_format_time(ms, buf, sizeof(buf));
	return json_string(buf);
}

/* Sets key to v, taking v; a NULL v (out of memory) fails. */
static int jset(json_t *obj, const char *key, json_t *v)
{
	return v ? json_object_set_new(obj, key, v) : -1;
}

static json_t *dump_accounts(const struct sim_account *list, size_t n)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		json_t *a = json_object();
		if (!a || jset(a, "name", jstr(list[i].name)) < 0 ||
		    jset(a, "password", jpassword_out(&list[i].password)) < 0 ||
		    jset(a, "rights", jstr_list(&list[i].rights)) < 0 ||
		    json_array_append_new(arr, a) < 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

static json_t *dump_service(const struct sim_service *s)
{
	json_t *o = json_object();
	if (!o || jset(o, "name", jstr(s->name)) < 0 ||
	    jset(o, "display_name", jstr(s->display_name)) < 0 ||
	    jset(o, "state", json_string(state_names[s->state])) < 0 ||
	    jset(o, "start_type", json_string(start_type_names[s->start_type])) < 0 ||
	    jset(o, "logon_account", jstr(s->logon_account)) < 0 ||
	    jset(o, "password", jpassword_out(&s->password)) < 0 ||
	    jset(o, "win32_exit_code", json_integer(s->win32_exit_code)) < 0 ||
	    jset(o, "service_exit_code", json_integer(s->service_exit_code)) < 0 ||
	    jset(o, "dependencies", jstr_list(&s->dependencies)) < 0 ||
	    jset(o, "required_rights", jstr_list(&s->required_rights)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *dump_event(const struct sim_event *e)
{
	json_t *o = json_object();
	if (!o || jset(o, "record_number", json_integer(e->record_number)) < 0 ||
	    jset(o, "log", jstr(e->log)) < 0 || jset(o, "source", jstr(e->source)) < 0 ||
	    jset(o, "event_id", json_integer(e->event_id)) < 0 ||
	    jset(o, "type", json_string(event_type_names[e->type])) < 0 ||
	    jset(o, "category", json_integer(e->category)) < 0 ||
	    jset(o, "category_name", jstr(e->category_name)) < 0 ||
	    jset(o, "time", jtime_out(e->time_ms)) < 0 ||
	    jset(o, "insertion_strings", jstr_list(&e->insertion_strings)) < 0 ||
	    jset(o, "message", jstr(e->message)) < 0 || jset(o, "computer", jstr(e->computer)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* json_object_set_new and json_array_append_new take the value even when
 * they fail, so each piece is handed to its parent as soon as it exists. */
static json_t *dump_host(const struct sim_host *h)
{
	json_t *root = json_object(), *services = json_array(), *records = json_array();
	json_t *exchange = json_object(), *log = json_object();
	if (jset(root, "schema", json_integer(SIM_SCHEMA_VERSION)) < 0 ||
	    jset(root, "computer_name", jstr(h->computer_name)) < 0 ||
	    jset(root, "domain", jstr(h->domain)) < 0 ||
	    jset(root, "role", json_string(role_names[h->role])) < 0 ||
	    jset(root, "role_changed_at", jtime_out(h->role_changed_at_ms)) < 0 ||
	    jset(root, "local_accounts", dump_accounts(h->local_accounts, h->n_local_accounts)) < 0 ||
	    jset(root, "domain_accounts", dump_accounts(h->domain_accounts, h->n_domain_accounts)) < 0)
		goto fail;
	json_incref(services);
	if (jset(root, "services", services) < 0)
		goto fail;
	for (size_t i = 0; i < h->n_services; i++)
		if (json_array_append_new(services, dump_service(&h->services[i])) < 0)
			goto fail;
	json_incref(exchange);
	if (jset(root, "exchange", exchange) < 0 ||
	    jset(exchange, "version", jstr(h->exchange_version)) < 0 ||
	    jset(exchange, "service_pack", json_integer(h->exchange_service_pack)) < 0 ||
	    jset(exchange, "pop3_imap_broken", json_boolean(h->pop3_imap_broken)) < 0)
		goto fail;
	json_incref(log);
	json_incref(records);
	if (jset(root, "event_log", log) < 0 ||
	    jset(log, "next_record_number", json_integer(h->next_record_number)) < 0 ||
	    jset(log, "records", records) < 0)
		goto fail;
	size_t first = h->n_events > SIM_EVENTS_KEPT ? h->n_events - SIM_EVENTS_KEPT : 0;
	for (size_t i = first; i < h->n_events; i++)
		if (json_array_append_new(records, dump_event(&h->events[i])) < 0)
			goto fail;
	json_decref(services);
	json_decref(exchange);
	json_decref(log);
	json_decref(records);
	return root;
fail:
	/* Our own references; json_decref ignores NULL. */
	json_decref(services);
	json_decref(exchange);
	json_decref(log);
	json_decref(records);
	json_decref(root);
	return NULL;
}

int sim_host_dump(const struct sim_host *h, char **json, size_t *len)
{
	json_t *root = dump_host(h);
	if (!root)
		return UV_ENOMEM;
	char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!text)
		return UV_ENOMEM;
	size_t n = strlen(text);
	char *grown = realloc(text, n + 2);
	if (!grown) {
		free(text);
		return UV_ENOMEM;
	}
	grown[n] = '\n';
	grown[n + 1] = '\0';
	*json = grown;
	*len = n + 1;
	return 0;
}

int sim_host_save_file(const struct sim_host *h, const char *path, char *err, size_t errlen)
{
	char *data;
	size_t len;
	int rc = sim_host_dump(h, &data, &len);
	if (rc < 0) {
		snprintf(err, errlen, "%s: out of memory", path);
		return rc;
	}
	rc = util_write_file_atomic(path, data, len, 0600, err, errlen);
	free(data);
	return rc;
}

int sim_host_edit(const char *path, sim_edit_fn fn, void *arg, char *err, size_t errlen)
{
	char lock_path[4096];
	struct sim_host *h = NULL;
	int rc;
	err[0] = '\0';
	if ((size_t)snprintf(lock_path, sizeof(lock_path), "%s.lock", path) >= sizeof(lock_path)) {
		snprintf(err, errlen, "%s: path too long", path);
		return UV_ENAMETOOLONG;
	}
	int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open lock file %s: %s", lock_path, strerror(errno));
		return rc;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		rc = -errno;
		snprintf(err, errlen, "cannot lock %s: %s", lock_path, strerror(errno));
		goto out;
	}
	if ((rc = sim_host_load_file(path, &h, err, errlen)) < 0)
		goto out;
	rc = fn(h, arg);
	if (rc < 0)
		goto out;
	rc = rc == 0 ? sim_host_save_file(h, path, err, errlen) : 0;
out:
	sim_host_free(h);
	close(fd); /* releases the lock */
	return rc;
}

/* ---- the event log ---- */

static void log_event(struct sim_host *h, const char *log, const char *source, uint32_t event_id,
		      enum sim_event_type type, uint32_t category, const char *category_name,
		      const char *const *strings, size_t n_strings, const char *fmt, ...)
	LOG_PRINTF(10, 11);

/* Appends a record. One that cannot be allocated is dropped, as a full
 * Windows log drops it. */
static void log_event(struct sim_host *h, const char *log, const char *source, uint32_t event_id,
		      enum sim_event_type type, uint32_t category, const char *category_name,
		      const char *const *strings, size_t n_strings, const char *fmt, ...)
{
	char message[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);

	/* Numbers run out after 2^32-1 records: start over as a cleared log. */
	if (h->next_record_number == UINT32_MAX) {
		trim_events(h, 0);
		h->next_record_number = 1;
	}
	/* Trim in bulk so a burst of logons stays linear. */
	if (h->n_events >= 2 * SIM_EVENTS_KEPT)
		trim_events(h, SIM_EVENTS_KEPT);
	if (h->n_events == h->events_cap) {
		size_t cap = h->events_cap ? 2 * h->events_cap : 64;
		struct sim_event *grown = realloc(h->events, cap * sizeof(*grown));
		if (!grown)
			return;
		h->events = grown;
		h->events_cap = cap;
	}
	struct sim_event e = {0};
	e.record_number = h->next_record_number;
	e.event_id = event_id;
	e.type = type;
	e.category = category;
	e.time_ms = now_seconds_ms();
	e.log = strdup(log);
	e.source = strdup(source);
	e.category_name = strdup(category_name);
	e.message = dup_text(message, sizeof(message));
	e.computer = strdup(h->computer_name);
	int ok = e.log && e.source && e.category_name && e.message && e.computer;
	for (size_t i = 0; ok && i < n_strings; i++) {
		char *s = dup_text(strings[i], TEXT_MAX_LEN);
		char **grown = s ? realloc(e.insertion_strings.v, (i + 1) * sizeof(*grown)) : NULL;
		if (!grown) {
			free(s);
			ok = 0;
			break;
		}
		e.insertion_strings.v = grown;
		e.insertion_strings.v[e.insertion_strings.n++] = s;
	}
	if (!ok) {
		event_free(&e);
		return;
	}
	h->events[h->n_events++] = e;
	h->next_record_number++;
}

static void log_scm(struct sim_host *h, uint32_t event_id, const char *const *strings,
		    size_t n_strings, const char *fmt, ...) LOG_PRINTF(5, 6);
static void log_scm(struct sim_host *h, uint32_t event_id, const char *const *strings,
		    size_t n_strings, const char *fmt, ...)
{
	char message[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	log_event(h, "System", SIM_SOURCE_SCM, event_id, SIM_EVENT_ERROR, 0, "None", strings,
		  n_strings, "%s", message);
}

/* ---- services ---- */

static int is_active(const struct sim_service *s)
{
	return s->state != SIM_STOPPED;
}

static void service_stopped(struct sim_service *s, uint32_t win32_exit_code)
{
	s->state = SIM_STOPPED;
	s->win32_exit_code = win32_exit_code;
	s->service_exit_code = 0;
}

static uint32_t start_at(struct sim_host *h, size_t i, uint32_t *tried);

/* One SCM start attempt of a stopped service; see "Starting a service". */
static uint32_t start_one(struct sim_host *h, size_t i, uint32_t *tried)
{
	struct sim_service *s = &h->services[i];
	char code[16];
	if (s->start_type == SIM_START_DISABLED)
		return WIN32_SERVICE_DISABLED;
	for (size_t d = 0; d < s->dependencies.n; d++) {
		size_t j = service_index(h, s->dependencies.v[d]);
		uint32_t rc = j == SIZE_MAX ? WIN32_SERVICE_DOES_NOT_EXIST : start_at(h, j, tried);
		if (rc == 0)
			continue;
		const char *dep = j == SIZE_MAX ? s->dependencies.v[d] : h->services[j].display_name;
		snprintf(code, sizeof(code), "%%%%%u", rc);
		const char *strings[] = {s->display_name, dep, code};
		log_scm(h, 7001, strings, 3,
			"The %s service depends on the %s service which failed to start because of "
			"the following error: %s",
			s->display_name, dep, winerr_text(rc));
		service_stopped(s, WIN32_SERVICE_DEPENDENCY_FAIL);
		return WIN32_SERVICE_DEPENDENCY_FAIL;
	}

	struct sim_account *a;
	enum sim_account_status st = sim_host_resolve(h, s->logon_account, &a);
	if (st != SIM_ACCOUNT_BUILTIN) {
		uint32_t logon = 0;
		/* LogonUser cannot tell a missing account from a bad password. */
		if (st == SIM_ACCOUNT_MISSING || !password_same(&s->password, &a->password))
			logon = WIN32_LOGON_FAILURE;
		else if (!strings_contains(&a->rights, SIM_RIGHT_SERVICE_LOGON))
			logon = WIN32_LOGON_TYPE_NOT_GRANTED;
		if (logon) {
			snprintf(code, sizeof(code), "%%%%%u", logon);
			const char *s7038[] = {s->name, s->logon_account, code};
			log_scm(h, 7038, s7038, 3,
				"The %s service was unable to log on as %s with the currently "
				"configured password due to the following error: %s",
				s->name, s->logon_account, winerr_text(logon));
			snprintf(code, sizeof(code), "%%%%%u", WIN32_SERVICE_LOGON_FAILED);
			const char *s7000[] = {s->display_name, code};
			log_scm(h, 7000, s7000, 2,
				"The %s service failed to start due to the following error: %s",
				s->display_name, winerr_text(WIN32_SERVICE_LOGON_FAILED));
			service_stopped(s, WIN32_SERVICE_LOGON_FAILED);
			return WIN32_SERVICE_LOGON_FAILED;
		}
		for (size_t r = 0; r < s->required_rights.n; r++) {
			if (strings_contains(&a->rights, s->required_rights.v[r]))
				continue;
			snprintf(code, sizeof(code), "%%%%%u", WIN32_PRIVILEGE_NOT_HELD);
			const char *s7023[] = {s->display_name, code};
			log_scm(h, 7023, s7023, 2,
				"The %s service terminated with the following error: %s",
				s->display_name, winerr_text(WIN32_PRIVILEGE_NOT_HELD));
			service_stopped(s, WIN32_PRIVILEGE_NOT_HELD);
			return WIN32_PRIVILEGE_NOT_HELD;
		}
	}
	s->state = SIM_RUNNING;
	s->win32_exit_code = 0;
	s->service_exit_code = 0;
	return 0;
}

/* Starts service i unless it is active; tried remembers the outcome for one
 * boot or one StartService, so a failed dependency is not retried for each
 * of its dependents (and a cycle, which loading rejects, cannot loop). */
static uint32_t start_at(struct sim_host *h, size_t i, uint32_t *tried)
{
	if (is_active(&h->services[i]) && h->services[i].state != SIM_STOP_PENDING)
		return 0;
	if (tried[i] != NOT_TRIED)
		return tried[i];
	tried[i] = WIN32_SERVICE_DEPENDENCY_FAIL;
	tried[i] = start_one(h, i, tried);
	return tried[i];
}

static uint32_t *new_tried(const struct sim_host *h)
{
	uint32_t *tried = malloc((h->n_services ? h->n_services : 1) * sizeof(*tried));
	for (size_t i = 0; tried && i < h->n_services; i++)
		tried[i] = NOT_TRIED;
	return tried;
}

uint32_t sim_host_start_service(struct sim_host *h, const char *service)
{
	size_t i = service_index(h, service);
	if (i == SIZE_MAX)
		return WIN32_SERVICE_DOES_NOT_EXIST;
	if (is_active(&h->services[i]) && h->services[i].state != SIM_STOP_PENDING)
		return WIN32_SERVICE_ALREADY_RUNNING;
	uint32_t *tried = new_tried(h);
	if (!tried)
		return WIN32_NOT_ENOUGH_MEMORY;
	uint32_t rc = start_at(h, i, tried);
	free(tried);
	return rc;
}

uint32_t sim_host_stop_service(struct sim_host *h, const char *service)
{
	size_t i = service_index(h, service);
	if (i == SIZE_MAX)
		return WIN32_SERVICE_DOES_NOT_EXIST;
	struct sim_service *s = &h->services[i];
	if (!is_active(s))
		return WIN32_SERVICE_NOT_ACTIVE;
	for (size_t k = 0; k < h->n_services; k++)
		if (k != i && is_active(&h->services[k]) &&
		    strings_contains(&h->services[k].dependencies, s->name))
			return WIN32_DEPENDENT_SERVICES_RUNNING;
	service_stopped(s, 0);
	return 0;
}

/* Services in dependency order, dependencies first. */
static void topo_visit(const struct sim_host *h, size_t i, uint8_t *seen, size_t *order, size_t *k)
{
	if (seen[i])
		return;
	seen[i] = 1;
	const struct sim_service *s = &h->services[i];
	for (size_t d = 0; d < s->dependencies.n; d++) {
		size_t j = service_index(h, s->dependencies.v[d]);
		if (j != SIZE_MAX)
			topo_visit(h, j, seen, order, k);
	}
	order[(*k)++] = i;
}

static void topo_order(const struct sim_host *h, size_t *order)
{
	uint8_t seen[SIM_SERVICES_MAX] = {0};
	size_t k = 0;
	for (size_t i = 0; i < h->n_services; i++)
		topo_visit(h, i, seen, order, &k);
}

void sim_host_reboot(struct sim_host *h)
{
	size_t order[SIM_SERVICES_MAX];
	topo_order(h, order);
	log_event(h, "System", "EventLog", 6006, SIM_EVENT_INFORMATION, 0, "None", NULL, 0,
		  "The Event log service was stopped.");
	for (size_t k = h->n_services; k-- > 0;)
		service_stopped(&h->services[order[k]], 0);
	log_event(h, "System", "EventLog", 6005, SIM_EVENT_INFORMATION, 0, "None", NULL, 0,
		  "The Event log service was started.");
	uint32_t *tried = new_tried(h);
	if (!tried)
		return;
	for (size_t k = 0; k < h->n_services; k++) {
		struct sim_service *s = &h->services[order[k]];
		if (s->start_type == SIM_START_BOOT || s->start_type == SIM_START_SYSTEM ||
		    s->start_type == SIM_START_AUTO)
			start_at(h, order[k], tried);
	}
	free(tried);
}

int sim_host_dcpromo(struct sim_host *h, int backup)
{
	if (sim_host_is_dc(h))
		return UV_EALREADY;
	h->role = backup ? SIM_ROLE_BACKUP_DC : SIM_ROLE_PRIMARY_DC;
	h->role_changed_at_ms = now_seconds_ms();
	for (size_t i = 0; i < h->n_local_accounts; i++)
		account_free(&h->local_accounts[i]);
	h->n_local_accounts = 0;
	/* The domain controllers' policy replaces the local one: rights granted
	 * on this server, to the Exchange account among others, are gone. */
	for (size_t i = 0; i < h->n_domain_accounts; i++)
		strings_clear(&h->domain_accounts[i].rights);
	h->pop3_imap_broken = 1;
	log_event(h, "Application", "SceCli", 1704, SIM_EVENT_INFORMATION, 0, "None", NULL, 0,
		  "Security policy in the Group policy objects has been applied successfully.");
	sim_host_reboot(h);
	return 0;
}

static uint64_t client_logons(struct sim_host *h, const char *source, uint32_t event_id,
			      uint64_t count, struct sim_logon_counts *out)
{
	struct sim_logon_counts c = {0};
	const struct sim_service *is = sim_host_find_service(h, "MSExchangeIS");
	if (!is || is->state != SIM_RUNNING) {
		c.refused = count;
	} else {
		struct sim_account *a;
		enum sim_account_status st = sim_host_resolve(h, is->logon_account, &a);
		/* The store calls LogonUser for the client, which on Windows
		 * 2000 needs SeTcbPrivilege; a broken SP install fails too. */
		int broken = h->pop3_imap_broken || !account_has_right(st, a, SIM_RIGHT_TCB);
		for (uint64_t i = 0; i < count; i++) {
			if (!broken) {
				c.ok++;
				continue;
			}
			log_event(h, "Application", source, event_id, SIM_EVENT_ERROR, 2,
				  "Authentication", NULL, 0,
				  "A required privilege is not held by the client");
			c.failed++;
		}
	}
	if (out)
		*out = c;
	return c.failed;
}

void sim_host_logon(struct sim_host *h, uint64_t pop3, uint64_t imap4,
		    struct sim_logon_counts *pop3_out, struct sim_logon_counts *imap4_out)
{
	client_logons(h, SIM_SOURCE_POP3, SIM_EVENT_POP3_AUTH, pop3, pop3_out);
	client_logons(h, SIM_SOURCE_IMAP4, SIM_EVENT_IMAP4_AUTH, imap4, imap4_out);
}

/* ---- repair actions ---- */

uint32_t sim_host_set_service_credentials(struct sim_host *h, const char *service,
					  const char *account, const char *password)
{
	struct sim_service *s = sim_host_find_service(h, service);
	struct sim_password pw = {0};
	if (!s)
		return WIN32_SERVICE_DOES_NOT_EXIST;
	enum sim_account_status st = sim_host_resolve(h, account, NULL);
	if (st == SIM_ACCOUNT_MISSING)
		return WIN32_NONE_MAPPED;
	if (st == SIM_ACCOUNT_EXISTS &&
	    service_password(h, account, password ? password : "", &pw) < 0)
		return WIN32_NOT_ENOUGH_MEMORY;
	if (replace_string(&s->logon_account, account) < 0)
		return WIN32_NOT_ENOUGH_MEMORY;
	s->password = pw;
	return 0;
}

uint32_t sim_host_verify_credentials(const struct sim_host *h, const char *account,
				     const char *password)
{
	struct sim_account *a;
	enum sim_account_status st = sim_host_resolve(h, account, &a);
	if (st == SIM_ACCOUNT_MISSING)
		return WIN32_NONE_MAPPED;
	if (st == SIM_ACCOUNT_BUILTIN)
		return 0;
	if (!sim_password_matches(&a->password, password))
		return WIN32_LOGON_FAILURE;
	if (!strings_contains(&a->rights, SIM_RIGHT_SERVICE_LOGON))
		return WIN32_LOGON_TYPE_NOT_GRANTED;
	return 0;
}

uint32_t sim_host_grant_right(struct sim_host *h, const char *account, const char *right)
{
	struct sim_account *a;
	const char *canonical = right ? right_canonical(right) : NULL;
	enum sim_account_status st = sim_host_resolve(h, account, &a);
	if (st == SIM_ACCOUNT_MISSING)
		return WIN32_NONE_MAPPED;
	if (!canonical)
		return WIN32_NO_SUCH_PRIVILEGE;
	if (st == SIM_ACCOUNT_BUILTIN || strings_contains(&a->rights, canonical))
		return 0;
	if (a->rights.n >= LIST_MAX || strings_push(&a->rights, canonical) < 0)
		return WIN32_NOT_ENOUGH_MEMORY;
	return 0;
}

uint32_t sim_host_run_installer(struct sim_host *h, const char *path, const char *args)
{
	if (!path || !*path)
		return WIN32_FILE_NOT_FOUND;
	if (h->exchange_service_pack < 3) {
		if (replace_string(&h->exchange_version, "5.5.2650") < 0)
			return WIN32_NOT_ENOUGH_MEMORY;
		h->exchange_service_pack = 3;
	}
	h->pop3_imap_broken = 0;
	char sp[16];
	snprintf(sp, sizeof(sp), "%u", h->exchange_service_pack);
	const char *strings[] = {sp, path, args ? args : ""};
	log_event(h, "Application", SIM_SOURCE_SETUP, SIM_EVENT_SETUP_APPLIED,
		  SIM_EVENT_INFORMATION, 0, "None", strings, 3,
		  "Microsoft Exchange Server 5.5 Service Pack %s was applied by %.200s%s%.200s.", sp,
		  path, args && *args ? " " : "", args ? args : "");
	return 0;
}

/* ---- what the probe reports ---- */

static Exfleet__DomainRole role_wire(enum sim_role r)
{
	switch (r) {
	case SIM_ROLE_STANDALONE_SERVER: return EXFLEET__DOMAIN_ROLE__ROLE_STANDALONE_SERVER;
	case SIM_ROLE_MEMBER_SERVER: return EXFLEET__DOMAIN_ROLE__ROLE_MEMBER_SERVER;
	case SIM_ROLE_BACKUP_DC: return EXFLEET__DOMAIN_ROLE__ROLE_BACKUP_DC;
	case SIM_ROLE_PRIMARY_DC: return EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC;
	}
	return EXFLEET__DOMAIN_ROLE__ROLE_UNKNOWN;
}

Exfleet__ServiceState sim_state_wire(enum sim_state s)
{
	switch (s) {
	case SIM_STOPPED: return EXFLEET__SERVICE_STATE__SERVICE_STOPPED;
	case SIM_START_PENDING: return EXFLEET__SERVICE_STATE__SERVICE_START_PENDING;
	case SIM_STOP_PENDING: return EXFLEET__SERVICE_STATE__SERVICE_STOP_PENDING;
	case SIM_RUNNING: return EXFLEET__SERVICE_STATE__SERVICE_RUNNING;
	case SIM_PAUSED: return EXFLEET__SERVICE_STATE__SERVICE_PAUSED;
	}
	return EXFLEET__SERVICE_STATE__SERVICE_STATE_UNKNOWN;
}

static Exfleet__EventType event_type_wire(enum sim_event_type t)
{
	switch (t) {
	case SIM_EVENT_ERROR: return EXFLEET__EVENT_TYPE__EVENT_ERROR;
	case SIM_EVENT_WARNING: return EXFLEET__EVENT_TYPE__EVENT_WARNING;
	case SIM_EVENT_INFORMATION: return EXFLEET__EVENT_TYPE__EVENT_INFORMATION;
	case SIM_EVENT_AUDIT_SUCCESS: return EXFLEET__EVENT_TYPE__EVENT_AUDIT_SUCCESS;
	case SIM_EVENT_AUDIT_FAILURE: return EXFLEET__EVENT_TYPE__EVENT_AUDIT_FAILURE;
	}
	return EXFLEET__EVENT_TYPE__EVENT_SUCCESS;
}

/* Copies a list into a protobuf repeated string field. */
static int copy_list(char *const *v, size_t n, char ***out, size_t *out_n)
{
	*out = NULL;
	*out_n = 0;
	if (n == 0)
		return 0;
	if (!(*out = calloc(n, sizeof(**out))))
		return UV_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!((*out)[i] = strdup(v[i])))
			return UV_ENOMEM;
		*out_n = i + 1;
	}
	return 0;
}

static int service_wire(const struct sim_host *h, const struct sim_service *s, Exfleet__Service *w)
{
	int rc;
	if (!(w->name = strdup(s->name)) || !(w->display_name = strdup(s->display_name)) ||
	    !(w->logon_account = strdup(s->logon_account)))
		return UV_ENOMEM;
	w->state = sim_state_wire(s->state);
	w->start_type = (Exfleet__StartType)(s->start_type + 1);
	w->win32_exit_code = s->win32_exit_code;
	w->service_exit_code = s->service_exit_code;
	if ((rc = copy_list(s->dependencies.v, s->dependencies.n, &w->dependencies,
			    &w->n_dependencies)) < 0)
		return rc;
	switch (sim_host_resolve(h, s->logon_account, NULL)) {
	case SIM_ACCOUNT_BUILTIN: w->account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_BUILTIN; break;
	case SIM_ACCOUNT_EXISTS: w->account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_EXISTS; break;
	case SIM_ACCOUNT_MISSING: w->account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING; break;
	}
	uint32_t code = sim_host_account_rights(h, s->logon_account, &w->account_rights,
						&w->n_account_rights);
	if (code == WIN32_NOT_ENOUGH_MEMORY)
		return UV_ENOMEM;
	/* A missing account has no SID, so its rights cannot be read (1332). */
	w->rights_error = code;
	return 0;
}

int sim_host_snapshot(const struct sim_host *h, Exfleet__Snapshot **out)
{
	Exfleet__Snapshot *snap = malloc(sizeof(*snap));
	*out = NULL;
	if (!snap)
		return UV_ENOMEM;
	exfleet__snapshot__init(snap);
	if (!(snap->computer_name = strdup(h->computer_name)) || !(snap->domain = strdup(h->domain)) ||
	    !(snap->exchange_version = strdup(h->exchange_version)))
		goto oom;
	snap->role = role_wire(h->role);
	snap->role_changed_at_ms = h->role_changed_at_ms;
	snap->sam_present = !sim_host_is_dc(h);
	snap->exchange_service_pack = h->exchange_service_pack;
	snap->service_pack_needs_reapply = h->pop3_imap_broken != 0;
	if (h->n_services && !(snap->services = calloc(h->n_services, sizeof(*snap->services))))
		goto oom;
	for (size_t i = 0; i < h->n_services; i++) {
		Exfleet__Service *w = malloc(sizeof(*w));
		if (!w)
			goto oom;
		exfleet__service__init(w);
		snap->services[snap->n_services++] = w;
		if (service_wire(h, &h->services[i], w) < 0)
			goto oom;
	}
	*out = snap;
	return 0;
oom:
	exfleet__snapshot__free_unpacked(snap, NULL);
	return UV_ENOMEM;
}

static Exfleet__Event *event_wire(const struct sim_event *e)
{
	Exfleet__Event *w = malloc(sizeof(*w));
	if (!w)
		return NULL;
	exfleet__event__init(w);
	w->record_number = e->record_number;
	w->event_id = e->event_id;
	w->type = event_type_wire(e->type);
	w->category = e->category;
	w->time_generated_ms = e->time_ms;
	if (!(w->log = strdup(e->log)) || !(w->source = strdup(e->source)) ||
	    !(w->category_name = strdup(e->category_name)) || !(w->message = strdup(e->message)) ||
	    !(w->computer = strdup(e->computer)) ||
	    copy_list(e->insertion_strings.v, e->insertion_strings.n, &w->insertion_strings,
		      &w->n_insertion_strings) < 0) {
		exfleet__event__free_unpacked(w, NULL);
		return NULL;
	}
	return w;
}

void sim_events_free(Exfleet__Event **events, size_t n)
{
	for (size_t i = 0; i < n; i++)
		exfleet__event__free_unpacked(events[i], NULL);
	free(events);
}

int sim_host_read_events(const struct sim_host *h, char *cursor, size_t cursor_len, size_t max,
			 Exfleet__Event ***events, size_t *n, char *err, size_t errlen)
{
	uint64_t last = 0;
	*events = NULL;
	*n = 0;
	err[0] = '\0';
	if (cursor_len < SIM_CURSOR_MAX)
		return UV_EINVAL;
	if (cursor[0]) {
		char *end;
		errno = 0;
		unsigned long long v = strtoull(cursor, &end, 10);
		if (*end || errno || cursor[0] < '0' || cursor[0] > '9' || v > UINT32_MAX)
			snprintf(err, errlen, "event cursor '%.32s' is not a record number; "
				 "reading from the oldest record", cursor);
		else
			last = v;
	}
	/* Beyond the newest number ever assigned: the log was cleared. */
	if (last >= h->next_record_number)
		last = 0;
	size_t lo = 0, hi = h->n_events;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (h->events[mid].record_number <= last)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t count = h->n_events - lo;
	if (count > max)
		count = max;
	if (count) {
		Exfleet__Event **out = calloc(count, sizeof(*out));
		if (!out)
			return UV_ENOMEM;
		for (size_t i = 0; i < count; i++) {
			if (!(out[i] = event_wire(&h->events[lo + i]))) {
				sim_events_free(out, i);
				return UV_ENOMEM;
			}
		}
		last = h->events[lo + count - 1].record_number;
		*events = out;
		*n = count;
	}
	snprintf(cursor, cursor_len, "%llu", (unsigned long long)last);
	return 0;
}

/* ---- generated fleets ---- */

static const char *const exchange_rights[] = {SIM_RIGHT_SERVICE_LOGON, SIM_RIGHT_TCB,
					      SIM_RIGHT_RESTORE};
static const char *const exchange_required[] = {SIM_RIGHT_TCB, SIM_RIGHT_RESTORE};

static void rng_bytes(struct sim_rng *r, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++)
		out[i] = (uint8_t)(sim_rng_next(r) >> 56);
}

int sim_host_generate(const struct sim_fleet_opts *o, size_t index, const char *computer_name,
		      struct sim_host **out)
{
	struct sim_rng r;
	uint8_t salt[SIM_SALT_LEN];
	char account[64], admin_password[33];
	int rc = UV_ENOMEM;
	*out = NULL;
	if (!valid_netbios(computer_name) || !valid_netbios(o->domain) || !o->password)
		return UV_EINVAL;
	sim_rng_seed(&r, o->seed, (uint64_t)index + 1);

	/* Decisions first, in a fixed order, so each host depends on (seed, index) only. */
	double u = (double)(sim_rng_next(&r) >> 11) * 0x1.0p-53;
	int local = u < o->local_account_share;
	int host_form = sim_rng_below(&r, 10) < 3;      /* EXCH001\exsvc rather than .\exsvc */
	int standalone = sim_rng_below(&r, 10) == 0;    /* a workgroup server (local only) */
	int dc = sim_rng_below(&r, 100) < 3;            /* Exchange already on a DC (domain only) */
	int sp2 = sim_rng_below(&r, 10) == 0;
	int has_imc = sim_rng_below(&r, 10) < 4;
	int has_es = sim_rng_below(&r, 10) < 8;
	int es_system = sim_rng_below(&r, 10) < 2;
	enum sim_role role = SIM_ROLE_MEMBER_SERVER;
	if (local && standalone)
		role = SIM_ROLE_STANDALONE_SERVER;
	else if (!local && dc)
		role = SIM_ROLE_BACKUP_DC;

	struct sim_host *h = sim_host_new(computer_name, o->domain, role);
	if (!h)
		return UV_ENOMEM;
	if (sp2) {
		if (replace_string(&h->exchange_version, "5.5.2448") < 0)
			goto out;
		h->exchange_service_pack = 2;
	}
	if (local)
		snprintf(account, sizeof(account), "%s\\exsvc", host_form ? computer_name : ".");
	else
		snprintf(account, sizeof(account), "%s\\exsvc", o->domain);
	if (!sim_host_is_dc(h)) {
		for (size_t i = 0; i < sizeof(admin_password) - 1; i++)
			admin_password[i] = "abcdefghijkmnpqrstuvwxyz23456789"[sim_rng_below(&r, 32)];
		admin_password[sizeof(admin_password) - 1] = '\0';
		rng_bytes(&r, salt, sizeof(salt));
		if ((rc = sim_host_add_account(h, 1, "Administrator", admin_password, salt, NULL, 0)) < 0)
			goto out;
		if (local) {
			rng_bytes(&r, salt, sizeof(salt));
			if ((rc = sim_host_add_account(h, 1, "exsvc", o->password, salt,
						       exchange_rights, 3)) < 0)
				goto out;
		}
	}
	rng_bytes(&r, salt, sizeof(salt));
	if ((rc = sim_host_add_account(h, 0, "exsvc", o->password, salt, exchange_rights,
				       local ? 0 : 3)) < 0)
		goto out;

	static const struct {
		const char *name, *display, *dep;
	} exchange[] = {
		{"MSExchangeSA", "Microsoft Exchange System Attendant", NULL},
		{"MSExchangeDS", "Microsoft Exchange Directory", "MSExchangeSA"},
		{"MSExchangeIS", "Microsoft Exchange Information Store", "MSExchangeDS"},
		{"MSExchangeMTA", "Microsoft Exchange Message Transfer Agent", "MSExchangeDS"},
		{"MSExchangeIMC", "Microsoft Exchange Internet Mail Service", "MSExchangeMTA"},
		{"MSExchangeES", "Microsoft Exchange Event Service", "MSExchangeIS"},
	};
	for (size_t i = 0; i < sizeof(exchange) / sizeof(exchange[0]); i++) {
		int system = 0;
		if (strcmp(exchange[i].name, "MSExchangeIMC") == 0 && !has_imc)
			continue;
		if (strcmp(exchange[i].name, "MSExchangeES") == 0) {
			if (!has_es)
				continue;
			system = es_system;
		}
		struct sim_service_spec spec = {
			.name = exchange[i].name,
			.display_name = exchange[i].display,
			.state = SIM_RUNNING,
			.start_type = SIM_START_AUTO,
			.logon_account = system ? "LocalSystem" : account,
			.password = system ? NULL : o->password,
			.dependencies = exchange[i].dep ? &exchange[i].dep : NULL,
			.n_dependencies = exchange[i].dep ? 1 : 0,
			.required_rights = system ? NULL : exchange_required,
			.n_required_rights = system ? 0 : 2,
		};
		if ((rc = sim_host_add_service(h, &spec)) < 0)
			goto out;
	}
	/* IIS, for Outlook Web Access: LocalSystem, unaffected by dcpromo. */
	struct sim_service_spec w3svc = {
		.name = "W3SVC",
		.display_name = "World Wide Web Publishing Service",
		.state = SIM_RUNNING,
		.start_type = SIM_START_AUTO,
		.logon_account = "LocalSystem",
	};
	if ((rc = sim_host_add_service(h, &w3svc)) < 0)
		goto out;
	*out = h;
	h = NULL;
	rc = 0;
out:
	OPENSSL_cleanse(admin_password, sizeof(admin_password));
	sim_host_free(h);
	return rc;
}
