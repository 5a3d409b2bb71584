/* The agent's configuration file (agent.ini). */
#include <stddef.h>

#include "agent.h"
#include "frame.h"

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};

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
	  "optional CRL (PEM)"),
};

#define NKEYS (sizeof(agent_keys) / sizeof(agent_keys[0]))

int agent_config_load(const char *path, struct agent_config *cfg, struct config_error *err)
{
	return config_load(path, agent_keys, NKEYS, cfg, err);
}

void agent_config_free(struct agent_config *cfg)
{
	config_free(agent_keys, NKEYS, cfg);
}

void agent_config_reference(FILE *out)
{
	config_print_reference(out, agent_keys, NKEYS);
}
