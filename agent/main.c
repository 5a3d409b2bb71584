/* exfleet-agent: watches one Exchange server and reports to the collector. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "agent.h"
#include "collect.h"
#include "command.h"
#include "log.h"
#include "util.h"
#include "pki.h"
#include "winservice.h"

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

/* The running agent: what it reads, what it keeps, whom it talks to. */
struct agent {
	const struct agent_config *cfg;
	const struct probe_backend *backend;
	struct probe *probe;
	struct spool *spool;
	struct collect collect;
	struct commands commands;
	struct agent_session session;
	uv_timer_t again;       /* more events to collect: go on next turn */
	uv_signal_t sigint, sigterm;
	uv_async_t stop;        /* agent_request_stop, from another thread */
	int stopping;
};

/* Stops asked for from another thread (the Windows service's control
 * handler): stop_async is the running agent's, NULL when there is none. */
static uv_once_t stop_once = UV_ONCE_INIT;
static uv_mutex_t stop_lock;
static uv_async_t *stop_async;
static int stop_asked;

static void stop_lock_init(void)
{
	uv_mutex_init(&stop_lock);
}

void agent_request_stop(void)
{
	uv_once(&stop_once, stop_lock_init);
	uv_mutex_lock(&stop_lock);
	stop_asked = 1;
	if (stop_async)
		uv_async_send(stop_async);
	uv_mutex_unlock(&stop_lock);
}

static void again_cb(uv_timer_t *t);

static void collect_now(struct agent *a)
{
	if (a->stopping)
		return;
	int more = 0;
	int n = collect_run(&a->collect, &more);
	if (n > 0)
		session_kick(&a->session);
	/* A burst of events leaves freed memory behind: return it. */
	if (n > 100 && !more)
		util_trim_memory();
	/* Bounded work per turn: the rest after the loop has served I/O. */
	if (more)
		uv_timer_start(&a->again, again_cb, 0, 0);
}

static void again_cb(uv_timer_t *t)
{
	collect_now(t->data);
}

static void changed_cb(void *arg)
{
	collect_now(arg);
}

static void result_cb(void *arg)
{
	struct agent *a = arg;
	/* A command may have changed the host: look now rather than at the
	 * next notification. */
	collect_now(a);
	session_kick(&a->session);
}

static void probe_closed_cb(void *arg)
{
	struct agent *a = arg;
	uv_close((uv_handle_t *)&a->sigint, NULL);
	uv_close((uv_handle_t *)&a->sigterm, NULL);
	uv_mutex_lock(&stop_lock);
	stop_async = NULL;
	uv_mutex_unlock(&stop_lock);
	uv_close((uv_handle_t *)&a->stop, NULL);
}

static void stopped_cb(struct agent_session *s)
{
	struct agent *a = s->stopped_arg;
	commands_close(&a->commands);
	uv_close((uv_handle_t *)&a->again, NULL);
	a->backend->close(a->probe, probe_closed_cb, a);
}

static void agent_stop(struct agent *a)
{
	if (a->stopping)
		return;
	a->stopping = 1;
	a->session.stopped_arg = a;
	session_stop(&a->session, stopped_cb);
}

static void signal_cb(uv_signal_t *sig, int signum)
{
	struct agent *a = sig->data;
	if (!a->stopping)
		log_info("signal %d: stopping", signum);
	agent_stop(a);
}

static void stop_cb(uv_async_t *async)
{
	struct agent *a = async->data;
	if (!a->stopping)
		log_info("stop requested: stopping");
	agent_stop(a);
}

/* Opens what the agent runs on; err says what failed. */
static int agent_open(struct agent *a, uv_loop_t *loop, const struct agent_config *cfg,
		      SSL_CTX *tls, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	a->cfg = cfg;
	a->backend = probe_backend_find(cfg->probe_backend);
	if (!a->backend) {
		snprintf(err, errlen, "[probe] backend: '%s' is not built in (have: %s)",
			 cfg->probe_backend, probe_backend_names());
		return UV_EINVAL;
	}
	struct spool_options so = {.dir = cfg->spool_dir,
				   .max_bytes = cfg->spool_max,
				   .sync = (enum spool_sync)cfg->spool_sync};
	char why[512];
	if (spool_open(&a->spool, &so, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "[spool] %s", why);
		return UV_EIO;
	}
	struct probe_settings ps = {.host_file = cfg->probe_host_file,
				    .rescan_ms = cfg->probe_rescan_ms,
				    .state_dir = cfg->spool_dir};
	if (a->backend->open(&a->probe, loop, &ps, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "[probe] %s", why);
		goto fail_spool;
	}
	if (collect_init(&a->collect, cfg, a->backend, a->probe, a->spool, err, errlen) < 0)
		goto fail_probe;
	if (commands_init(&a->commands, loop, cfg, &a->collect, result_cb, a, why, sizeof(why)) <
	    0) {
		snprintf(err, errlen, "[commands] %s", why);
		goto fail_collect;
	}
	session_init(&a->session, loop, cfg, tls, a->spool, &a->commands, a->backend->name);
	uv_timer_init(loop, &a->again);
	a->again.data = a;
	return 0;
fail_collect:
	collect_free(&a->collect);
fail_probe:
	a->backend->close(a->probe, NULL, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
fail_spool:
	spool_close(a->spool);
	return UV_EINVAL;
}

int agent_main(int argc, char **argv)
{
	const char *path = NULL;
	int check = 0;
	log_set_prefix("exfleet-agent");
	util_ignore_sigpipe();
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
	struct tls_config tc = {cfg.ca_file, cfg.cert_file, cfg.key_file, cfg.crl_file,
				 cfg.allow_tls12};
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

	/* Lines go to stderr unless a wrapper chose a file (the Windows service). */
	log_set_level((enum log_level)cfg.log_level);
	/* libuv's thread pool serves the agent only the collector's name
	 * lookup, one at a time: one thread, not four idle stacks (unless the
	 * environment says otherwise). */
	char pool[16];
	size_t pool_len = sizeof(pool);
	if (uv_os_getenv("UV_THREADPOOL_SIZE", pool, &pool_len) == UV_ENOENT)
		uv_os_setenv("UV_THREADPOOL_SIZE", "1");
	uv_loop_t *loop = uv_default_loop();
	struct agent a;
	if (agent_open(&a, loop, &cfg, tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		uv_loop_close(loop);
		goto out;
	}
	uv_signal_init(loop, &a.sigint);
	uv_signal_init(loop, &a.sigterm);
	a.sigint.data = a.sigterm.data = &a;
	uv_signal_start(&a.sigint, signal_cb, SIGINT);
	uv_signal_start(&a.sigterm, signal_cb, SIGTERM);
	uv_async_init(loop, &a.stop, stop_cb);
	a.stop.data = &a;
	uv_once(&stop_once, stop_lock_init);
	uv_mutex_lock(&stop_lock);
	stop_async = &a.stop;
	if (stop_asked) /* before the loop ran: stop as soon as it does */
		uv_async_send(&a.stop);
	uv_mutex_unlock(&stop_lock);
	log_info("agent %s %s starting: collector %s, probe %s, spool %s (%llu records "
		 "unacknowledged, up to #%llu)",
		 cfg.host_id, EXFLEET_VERSION, cfg.collector_address, a.backend->name,
		 cfg.spool_dir, (unsigned long long)spool_records(a.spool),
		 (unsigned long long)spool_highest(a.spool));
	if (a.backend->watch(a.probe, changed_cb, &a) < 0)
		log_warn("cannot watch the host for changes: it is read only at start and on "
			 "commands");
	collect_now(&a);
	session_start(&a.session);
	uv_run(loop, UV_RUN_DEFAULT);
	collect_free(&a.collect);
	spool_close(a.spool);
	rc = uv_loop_close(loop) == 0 ? 0 : 1;
	log_info("agent stopped");
out:
	SSL_CTX_free(tls);
	agent_config_free(&cfg);
	return rc;
}

int main(int argc, char **argv)
{
#ifdef _WIN32
	return winsvc_main(argc, argv); /* the service commands, else agent_main */
#else
	return agent_main(argc, argv);
#endif
}
