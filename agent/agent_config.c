/* The agent's configuration file (agent.ini). */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>

#include "agent.h"
#include "frame.h"

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
/* In enum spool_sync order. */
static const char *const sync_modes[] = {"batch", "always", "none", NULL};

#define K(section, name, type, field, flags, def, min, max, help)                           \
	{section, name, type, offsetof(struct agent_config, field), flags, def, min, max, NULL, help}

static const struct config_key agent_keys[] = {
	K("agent", "host_id", CONFIG_STRING, host_id, CONFIG_REQUIRED, NULL, 0, 0,
	  "this host's id; must equal the CN of the agent certificate"),
	K("agent", "site", CONFIG_STRING, site, 0, NULL, 0, 0, "label: the site this host is in"),
	K("agent", "wave", CONFIG_STRING, wave, 0, NULL, 0, 0,
	  "label: the migration wave this host belongs to"),
	{"agent", "log_level", CONFIG_ENUM, offsetof(struct agent_config, log_level), 0, "info", 0,
	 0, log_levels, "error, warn, info or debug"},
	K("collector", "address", CONFIG_STRING, collector_address, CONFIG_REQUIRED, NULL, 0, 0,
	  "collector host:port, e.g. collector.corp.example:7443"),
	K("collector", "name", CONFIG_STRING, collector_name, CONFIG_REQUIRED, NULL, 0, 0,
	  "the DNS name in the collector's certificate"),
	K("collector", "heartbeat", CONFIG_DURATION, heartbeat_ms, 0, "30s", 1000, 3600000,
	  "heartbeat interval until the collector sets one"),
	K("collector", "reconnect_min", CONFIG_DURATION, reconnect_min_ms, 0, "1s", 10, 3600000,
	  "first reconnect delay ceiling (exponential backoff with full jitter)"),
	K("collector", "reconnect_max", CONFIG_DURATION, reconnect_max_ms, 0, "5m", 10, 86400000,
	  "longest reconnect delay"),
	K("collector", "max_frame", CONFIG_SIZE, max_frame, 0, "1M", 1024, 64 << 20,
	  "largest protocol frame accepted"),
	K("tls", "ca", CONFIG_PATH, ca_file, CONFIG_REQUIRED | CONFIG_MUST_EXIST, NULL, 0, 0,
	  "the deployment CA certificate (PEM)"),
	K("tls", "cert", CONFIG_PATH, cert_file, CONFIG_REQUIRED | CONFIG_MUST_EXIST, NULL, 0, 0,
	  "this agent's certificate (PEM)"),
	K("tls", "key", CONFIG_PATH, key_file, CONFIG_REQUIRED | CONFIG_PRIVATE_KEY, NULL, 0, 0,
	  "this agent's private key (PEM, mode 0600)"),
	K("tls", "crl", CONFIG_PATH, crl_file, CONFIG_MUST_EXIST, NULL, 0, 0,
	  "optional CRL (PEM), for operators' and the collector's certificates; read again "
	  "when it changes"),
	K("tls", "allow_tls12", CONFIG_BOOL, allow_tls12, 0, "false", 0, 0,
	  "accept TLS 1.2 as well as 1.3 (only for peers that cannot do 1.3)"),
	K("tls", "resumption", CONFIG_BOOL, resumption, 0, "true", 0, 0,
	  "keep the collector's last session ticket and resume with it when reconnecting"),
	K("probe", "backend", CONFIG_STRING, probe_backend, 0, "sim", 0, 0,
	  "how the host is read: sim (a simulated host file) or win32"),
	K("probe", "host_file", CONFIG_PATH, probe_host_file, 0, NULL, 0, 0,
	  "sim: the simulated host's JSON file"),
	K("probe", "rescan", CONFIG_DURATION, probe_rescan_ms, 0, "10s", 100, 3600000,
	  "rescan interval, a safety net behind change notification"),
	K("spool", "dir", CONFIG_PATH, spool_dir, CONFIG_REQUIRED, NULL, 0, 0,
	  "directory of the durable spool (created 0700)"),
	K("spool", "max_size", CONFIG_SIZE, spool_max, 0, "64M", 65536, 1ll << 40,
	  "spool limit; when full the oldest events are dropped and counted"),
	{"spool", "sync", CONFIG_ENUM, offsetof(struct agent_config, spool_sync), 0, "batch", 0, 0,
	 sync_modes, "batch (fsync before each send), always (each record) or none (tests)"},
	K("services", "watched", CONFIG_LIST, watched_services, 0,
	  "MSExchangeSA, MSExchangeDS, MSExchangeIS, MSExchangeMTA, MSExchangeIMC, MSExchangeES", 0,
	  0, "services reported in snapshots"),
	K("events", "levels", CONFIG_LIST, event_levels, 0, "error, warning", 0, 0,
	  "event types forwarded: error, warning, information, audit_success, audit_failure"),
	K("events", "always", CONFIG_LIST, event_always, 0,
	  "MSExchangePOP3/13003, MSExchangeIMAP4/13003", 0, 0,
	  "SOURCE/ID forwarded whatever its type (the auth-privilege events)"),
	K("commands", "replay_cache", CONFIG_PATH, replay_cache, 0, NULL, 0, 0,
	  "file of command ids already seen (default: commands.seen in the spool dir)"),
	K("commands", "restart_timeout", CONFIG_DURATION, restart_timeout_ms, 0, "2m", 1000,
	  3600000, "how long a restarted service may take to reach RUNNING"),
	K("commands", "clock_skew", CONFIG_DURATION, clock_skew_ms, 0, "5m", 0, 86400000,
	  "allowed difference between this host's clock and a command's times"),
	K("commands", "enabled", CONFIG_LIST, commands_enabled, 0,
	  "rescan, restart_services, verify_credentials, grant_rights, set_service_credentials, "
	  "reapply_service_pack",
	  0, 0, "actions this agent runs; others are answered REJECTED"),
	K("commands", "allowed_rights", CONFIG_LIST, allowed_rights, 0,
	  "SeServiceLogonRight, SeTcbPrivilege, SeRestorePrivilege", 0, 0,
	  "the only rights GRANT_RIGHTS may grant"),
	K("commands", "sealing_key", CONFIG_PATH, sealing_key, 0, NULL, 0, 0,
	  "X25519 key for sealed passwords, made at first start, mode 0600 "
	  "(default: sealing.key in the spool dir)"),
	K("commands", "service_pack_installer", CONFIG_PATH, service_pack_installer, 0, NULL, 0,
	  0, "REAPPLY_SERVICE_PACK runs this installer; unset: the action is refused"),
	K("commands", "service_pack_args", CONFIG_STRING, service_pack_args, 0, NULL, 0, 0,
	  "the installer's arguments, e.g. for an unattended install"),
};

const char *const agent_action_names[] = {
	"rescan",
	"restart_services",
	"verify_credentials",
	"grant_rights",
	"set_service_credentials",
	"reapply_service_pack",
	NULL,
};

#define NKEYS (sizeof(agent_keys) / sizeof(agent_keys[0]))

static int action_known(const char *name)
{
	for (size_t i = 0; agent_action_names[i]; i++) {
		const char *a = agent_action_names[i], *b = name;
		while (*a && tolower((unsigned char)*a) == tolower((unsigned char)*b)) {
			a++;
			b++;
		}
		if (!*a && !*b)
			return 1;
	}
	return 0;
}

int agent_config_load(const char *path, struct agent_config *cfg, struct config_error *err)
{
	int rc = config_load(path, agent_keys, NKEYS, cfg, err);
	if (rc < 0)
		return rc;
	/* A misspelt action would silently stay disabled: refuse it here, so
	 * --check finds it. */
	for (size_t i = 0; i < cfg->commands_enabled.count; i++)
		if (!action_known(cfg->commands_enabled.items[i])) {
			if (err)
				snprintf(err->msg, sizeof(err->msg),
					 "%s: [commands] enabled: '%s' is not an action; the "
					 "actions are rescan, restart_services, "
					 "verify_credentials, grant_rights, "
					 "set_service_credentials, reapply_service_pack",
					 path, cfg->commands_enabled.items[i]);
			return UV_EINVAL;
		}
	return 0;
}

void agent_config_free(struct agent_config *cfg)
{
	config_free(agent_keys, NKEYS, cfg);
}

void agent_config_reference(FILE *out)
{
	config_print_reference(out, agent_keys, NKEYS);
}
