/* libFuzzer harness for config: any text, loaded against a table with every
 * type, must give 0 or an error, and config_free must leave nothing behind.
 * No key checks files, so the harness touches no disk. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_conf {
	char *host_id;
	char *spool_dir;
	int64_t workers;
	int64_t offset;
	bool debug;
	uint64_t spool_limit;
	uint64_t heartbeat_ms;
	uint64_t timeout_ms;
	struct config_list collectors;
	int backend;
	char *ca;
};

static const char *const backends[] = { "sim", "win32", NULL };

#define F(field) offsetof(struct fuzz_conf, field)

static const struct config_key keys[] = {
	{ .section = "agent", .name = "host_id", .type = CONFIG_STRING, .offset = F(host_id),
	  .flags = CONFIG_REQUIRED },
	{ .section = "agent", .name = "spool_dir", .type = CONFIG_PATH, .offset = F(spool_dir),
	  .default_value = "spool" },
	{ .section = "agent", .name = "workers", .type = CONFIG_INT, .offset = F(workers),
	  .default_value = "4", .min = 1, .max = 64 },
	{ .section = "agent", .name = "offset", .type = CONFIG_INT, .offset = F(offset) },
	{ .section = "agent", .name = "debug", .type = CONFIG_BOOL, .offset = F(debug),
	  .default_value = "off" },
	{ .section = "agent", .name = "spool_limit", .type = CONFIG_SIZE, .offset = F(spool_limit),
	  .default_value = "64M", .min = 1024, .max = INT64_MAX },
	{ .section = "agent", .name = "heartbeat", .type = CONFIG_DURATION,
	  .offset = F(heartbeat_ms), .default_value = "30s", .min = 1000, .max = 3600000 },
	{ .section = "agent", .name = "timeout", .type = CONFIG_DURATION, .offset = F(timeout_ms) },
	{ .section = "agent", .name = "collectors", .type = CONFIG_LIST, .offset = F(collectors),
	  .default_value = "collector.example:7443" },
	{ .section = "agent", .name = "backend", .type = CONFIG_ENUM, .offset = F(backend),
	  .default_value = "sim", .choices = backends },
	{ .section = "tls", .name = "ca", .type = CONFIG_PATH, .offset = F(ca) },
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	struct fuzz_conf conf;
	struct config_error err;
	config_load_string(text, "fuzz.ini", "/etc/exfleet", keys, sizeof(keys) / sizeof(keys[0]),
			   &conf, &err);
	config_free(keys, sizeof(keys) / sizeof(keys[0]), &conf);
	free(text);
	return 0;
}
