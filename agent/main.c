/* exfleet-agent: watches one Exchange server and reports to the collector. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "agent.h"
#include "log.h"
#include "pki.h"

static const char usage[] =
	"usage: exfleet-agent --config FILE [--check] [--foreground]\n"
	"       exfleet-agent --version | --help | --config-reference\n"
	"\n"
	"Watches this Exchange server and reports to the exfleet collector over\n"
	"mutual TLS, reconnecting with backoff whenever the collector is away.\n"
	"\n"
	"  --config FILE        the agent's INI file (e.g. /etc/exfleet/agent.ini)\n"
	"  --check              validate the configuration, certificates and key, then exit\n"
	"  --foreground         run in the foreground, logging to stderr (the default here)\n"
	"  --config-reference   print every configuration key with its default\n"
	"  --version            print the version\n"
	"\n"
	"Exit status: 0 on a clean stop, 1 on a configuration or start-up error, 2 on usage.\n";

/* The certificate must name this host: the collector refuses a Hello whose
 * host id differs from the certificate it came with. */
static int check_identity(const char *path, const struct agent_config *cfg)
{
	FILE *f = fopen(cfg->cert_file, "r");
	if (!f) {
		fprintf(stderr, "%s: [tls] cert: cannot read %s\n", path, cfg->cert_file);
		return -1;
	}
	X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	char name[PKI_NAME_MAX + 1];
	enum pki_role role;
	int rc = -1;
	if (!cert || pki_cert_identity(cert, name, sizeof(name), &role) < 0)
		fprintf(stderr, "%s: [tls] cert: %s is not an exfleet certificate\n", path,
			cfg->cert_file);
	else if (role != PKI_ROLE_AGENT)
		fprintf(stderr, "%s: [tls] cert: %s is a %s certificate, not an agent's\n", path,
			cfg->cert_file, pki_role_name(role));
	else if (strcmp(name, cfg->host_id) != 0)
		fprintf(stderr,
			"%s: [agent] host_id: '%s' does not match the certificate's subject '%s' "
			"(%s)\n",
			path, cfg->host_id, name, cfg->cert_file);
	else
		rc = 0;
	X509_free(cert);
	return rc;
}

static uv_signal_t sigint, sigterm;

static void stopped_cb(struct agent_session *s)
{
	uv_close((uv_handle_t *)&sigint, NULL);
	uv_close((uv_handle_t *)&sigterm, NULL);
}

static void signal_cb(uv_signal_t *sig, int signum)
{
	log_info("signal %d: stopping", signum);
	session_stop(sig->data, stopped_cb);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	int check = 0;
	log_set_prefix("exfleet-agent");
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--check") == 0) {
			check = 1;
		} else if (strcmp(argv[i], "--foreground") == 0) {
			/* the default on this platform */
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("exfleet-agent %s\n", EXFLEET_VERSION);
			return 0;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			return 0;
		} else if (strcmp(argv[i], "--config-reference") == 0) {
			agent_config_reference(stdout);
			return 0;
		} else {
			fprintf(stderr, "exfleet-agent: unknown argument '%s'\n%s", argv[i], usage);
			return 2;
		}
	}
	if (!path) {
		fprintf(stderr, "exfleet-agent: --config FILE is required\n%s", usage);
		return 2;
	}

	struct agent_config cfg;
	struct config_error cerr;
	if (agent_config_load(path, &cfg, &cerr) < 0) {
		fprintf(stderr, "%s\n", cerr.msg);
		agent_config_free(&cfg);
		return 1;
	}
	int rc = 1;
	SSL_CTX *tls = NULL;
	if (check_identity(path, &cfg) < 0)
		goto out;
	char err[512];
	struct tls_config tc = {cfg.ca_file, cfg.cert_file, cfg.key_file, cfg.crl_file, 0};
	if (tls_ctx_new(&tls, 0, &tc, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: [tls] %s\n", path, err);
		goto out;
	}
	if (check) {
		printf("%s: OK: host %s, collector %s (%s)\n", path, cfg.host_id,
		       cfg.collector_address, cfg.collector_name);
		rc = 0;
		goto out;
	}

	log_init(stderr, (enum log_level)cfg.log_level);
	uv_loop_t *loop = uv_default_loop();
	struct agent_session session;
	session_init(&session, loop, &cfg, tls);
	uv_signal_init(loop, &sigint);
	uv_signal_init(loop, &sigterm);
	sigint.data = sigterm.data = &session;
	uv_signal_start(&sigint, signal_cb, SIGINT);
	uv_signal_start(&sigterm, signal_cb, SIGTERM);
	log_info("agent %s %s starting: collector %s", cfg.host_id, EXFLEET_VERSION,
		 cfg.collector_address);
	session_start(&session);
	uv_run(loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(loop) == 0 ? 0 : 1;
	log_info("agent stopped");
out:
	SSL_CTX_free(tls);
	agent_config_free(&cfg);
	return rc;
}
