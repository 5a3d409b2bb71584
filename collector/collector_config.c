/* The collector's configuration file (collector.ini). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector.h"

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};

#define K(section, name, type, field, flags, def, min, max, help)                           \
	{section, name, type, offsetof(struct collector_config, field), flags, def, min, max,   \
	 NULL, help}

static const struct config_key collector_keys[] = {
	K("collector", "id", CONFIG_STRING, id, CONFIG_REQUIRED, NULL, 0, 0,
	  "this collector's name, e.g. its DNS name"),
	K("collector", "listen", CONFIG_STRING, listen, 0, "0.0.0.0:7443", 0, 0,
	  "host:port where agents connect"),
	{"collector", "log_level", CONFIG_ENUM, offsetof(struct collector_config, log_level), 0,
	 "info", 0, 0, log_levels, "error, warn, info or debug"},
	K("agents", "heartbeat", CONFIG_DURATION, heartbeat_ms, 0, "30s", 1000, 3600000,
	  "heartbeat interval agents keep; 3 missed mark a host offline"),
	K("agents", "handshake_timeout", CONFIG_DURATION, handshake_timeout_ms, 0, "10s", 100,
	  300000, "time allowed for the TLS handshake"),
	K("agents", "max_handshakes", CONFIG_INT, max_handshakes, 0, "256", 1, 100000,
	  "TLS handshakes in progress at once; more connections wait their turn"),
	K("agents", "max_waiting", CONFIG_INT, max_waiting, 0, "20000", 0, 1000000,
	  "connections waiting for a handshake (a socket each, no TLS state); beyond, new "
	  "ones are closed at once"),
	K("agents", "wait_timeout", CONFIG_DURATION, wait_timeout_ms, 0, "25s", 100, 300000,
	  "how long a connection may wait for its handshake, oldest first (agents give up "
	  "after 30 s)"),
	K("agents", "max_sessions", CONFIG_INT, max_sessions, 0, "0", 0, 10000000,
	  "welcomed sessions at most (0: no limit); beyond, agents are told to retry later"),
	K("agents", "retry_after", CONFIG_DURATION, retry_after_ms, 0, "10s", 100, 3600000,
	  "how long a shed agent waits (with jitter) before it comes back"),
	K("agents", "write_queue_max", CONFIG_SIZE, write_queue_max, 0, "8M", 65536, 1ll << 30,
	  "bytes queued to an agent that does not read before its session is closed"),
	K("agents", "max_frame", CONFIG_SIZE, max_frame, 0, "1M", 1024, 64 << 20,
	  "largest protocol frame accepted"),
	K("store", "path", CONFIG_PATH, store_path, 0, "collector.db", 0, 0,
	  "the SQLite database (created if missing)"),
	K("store", "queue_high", CONFIG_INT, store_queue_high, 0, "4096", 16, 1000000,
	  "agent messages waiting for the store above which sessions stop reading"),
	K("store", "queue_low", CONFIG_INT, store_queue_low, 0, "1024", 1, 1000000,
	  "and at or below which they read again"),
	K("store", "event_retention", CONFIG_DURATION, event_retention_ms, 0, "90d", 0,
	  3650ll * 86400000, "events received longer ago are removed (0: kept forever)"),
	K("store", "events_per_host", CONFIG_INT, events_per_host, 0, "100000", 0, 1000000000,
	  "newest events kept per host (0: no limit)"),
	K("status", "services", CONFIG_LIST, status_services, 0,
	  "MSExchangeSA, MSExchangeDS, MSExchangeIS, MSExchangeMTA, MSExchangeIMC, MSExchangeES", 0,
	  0, "the Exchange services the status rules watch"),
	K("status", "auth_events", CONFIG_LIST, status_auth, 0,
	  "MSExchangePOP3/13003, MSExchangeIMAP4/13003", 0, 0,
	  "SOURCE/ID of the auth-privilege events (Q255269)"),
	K("status", "rights", CONFIG_LIST, status_rights, 0,
	  "SeServiceLogonRight, SeTcbPrivilege, SeRestorePrivilege", 0, 0,
	  "rights the Exchange service account needs"),
	K("status", "retention", CONFIG_DURATION, status_retention_ms, 0, "7d", 3600000,
	  3650ll * 86400000, "how far back events count when the promotion time is unknown"),
	K("api", "listen", CONFIG_STRING, api_listen, 0, "127.0.0.1:8443", 0, 0,
	  "host:port of the HTTPS API for operators (empty: no API)"),
	K("api", "max_body", CONFIG_SIZE, api_max_body, 0, "1M", 1024, 64 << 20,
	  "largest request body the API accepts (413 beyond); a wave plan is one body, "
	  "about 30 bytes per host"),
	K("api", "page_max", CONFIG_INT, api_page_max, 0, "500", 1, 100000,
	  "most items one page of an API list holds (limit=)"),
	K("api", "max_connections", CONFIG_INT, api_max_connections, 0, "256", 1, 100000,
	  "API connections open at once; more are closed"),
	K("api", "query_budget", CONFIG_DURATION, api_query_budget_ms, 0, "1s", 10, 60000,
	  "store time one API request may take (agents wait meanwhile); beyond: 503"),
	K("api", "signin_ttl", CONFIG_DURATION, api_signin_ttl_ms, 0, "5m", 10000, 86400000,
	  "how long a dashboard sign-in link (exfleetctl dashboard) works, once"),
	K("api", "session_ttl", CONFIG_DURATION, api_session_ttl_ms, 0, "8h", 60000,
	  30ll * 86400000, "how long a dashboard session lasts before signing in again"),
	K("tls", "ca", CONFIG_PATH, ca_file, CONFIG_REQUIRED | CONFIG_MUST_EXIST, NULL, 0, 0,
	  "the deployment CA certificate (PEM)"),
	K("tls", "cert", CONFIG_PATH, cert_file, CONFIG_REQUIRED | CONFIG_MUST_EXIST, NULL, 0, 0,
	  "this collector's certificate (PEM)"),
	K("tls", "key", CONFIG_PATH, key_file, CONFIG_REQUIRED | CONFIG_PRIVATE_KEY, NULL, 0, 0,
	  "this collector's private key (PEM, mode 0600)"),
	K("tls", "crl", CONFIG_PATH, crl_file, CONFIG_MUST_EXIST, NULL, 0, 0,
	  "CRL (PEM): revoked agents are refused; read again on SIGHUP"),
	K("tls", "allow_tls12", CONFIG_BOOL, allow_tls12, 0, "false", 0, 0,
	  "accept TLS 1.2 as well as 1.3 (only for peers that cannot do 1.3)"),
	K("tls", "resumption", CONFIG_BOOL, resumption, 0, "true", 0, 0,
	  "give each agent session a TLS 1.3 ticket, so that it resumes cheaply after a "
	  "restart (its certificate is checked against the CRL and its validity again)"),
	K("tls", "ticket_keys", CONFIG_PATH, ticket_keys_file, 0, NULL, 0, 0,
	  "file of the ticket keys (secret, mode 0600, made when missing); "
	  "unset: the store's path with .ticket-keys added"),
	K("tls", "ticket_rotation", CONFIG_DURATION, ticket_rotation_ms, 0, "1d", 1000,
	  7ll * 86400000, "a new ticket key this often; the one before still opens tickets"),
};

#define NKEYS (sizeof(collector_keys) / sizeof(collector_keys[0]))

int collector_config_load(const char *path, struct collector_config *cfg,
			  struct config_error *err)
{
	return config_load(path, collector_keys, NKEYS, cfg, err);
}

void collector_config_free(struct collector_config *cfg)
{
	config_free(collector_keys, NKEYS, cfg);
}

void collector_config_reference(FILE *out)
{
	config_print_reference(out, collector_keys, NKEYS);
}

int collector_status_rules(const struct collector_config *cfg, struct status_rules *rules,
			   char *err, size_t errlen)
{
	struct status_signature *auth = calloc(cfg->status_auth.count + 1, sizeof(*auth));
	if (!auth) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < cfg->status_auth.count; i++) {
		char *item = cfg->status_auth.items[i];
		char *slash = strrchr(item, '/');
		char *end = NULL;
		unsigned long id = slash ? strtoul(slash + 1, &end, 10) : 0;
		if (!slash || slash == item || !slash[1] || *end || id > UINT32_MAX) {
			snprintf(err, errlen, "[status] auth_events: '%s' is not SOURCE/ID", item);
			free(auth);
			return -1;
		}
		/* The source is the item up to the slash: a view into cfg. */
		*slash = '\0';
		auth[i].source = item;
		auth[i].event_id = (uint32_t)id;
	}
	rules->services = (const char *const *)cfg->status_services.items;
	rules->n_services = cfg->status_services.count;
	rules->auth = auth;
	rules->n_auth = cfg->status_auth.count;
	rules->rights = (const char *const *)cfg->status_rights.items;
	rules->n_rights = cfg->status_rights.count;
	rules->retention_ms = (int64_t)cfg->status_retention_ms;
	return 0;
}
