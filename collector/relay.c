#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "collector.h"
#include "log.h"
#include "sign.h"
#include "util.h"

/* New commands are looked for often (a scan of the rows after the last
 * one taken: cheap), the waiting ones walked for expiry once a second. */
#define POLL_MS 20
#define EXPIRE_MS 1000
#define RELAY_SKEW_MS 300000
#define RELAY_MAX 100000
#define CHECK_CHUNK 128         /* commands per work item */
#define SIGNER_TTL_MS 60000

/* A host's checked commands, waiting for it to connect. */
struct relay_host {
	char host_id[65];
	struct relay_command *head, *tail;
};

/* A chunk of commands checked on the thread pool. The worker writes only
 * here and into the commands' cmd and reason, which the loop leaves alone
 * until check_after_cb has taken the verdicts over. */
struct check_work {
	uv_work_t req;
	struct relay *r;
	struct relay_command *cmds[CHECK_CHUNK];
	int verdicts[CHECK_CHUNK];
	unsigned n, fast, full;
	int64_t now_ms;
	struct sign_memo memo; /* a wave's batch signature, checked once per chunk */
};

static void command_free(struct relay_command *c)
{
	if (c->cmd)
		exfleet__command__free_unpacked(c->cmd, NULL);
	free(c->envelope);
	free(c);
}

/* ---- the check, on the thread pool ---- */

/* The signer of this certificate, checked recently: its key, referenced. */
static EVP_PKEY *signer_find(struct relay *r, const unsigned char digest[32], int64_t now_ms)
{
	EVP_PKEY *key = NULL;
	uv_mutex_lock(&r->signers_lock);
	for (int i = 0; i < RELAY_SIGNERS && !key; i++) {
		struct relay_signer *s = &r->signers[i];
		if (s->key && now_ms - s->checked_ms < SIGNER_TTL_MS &&
		    memcmp(s->digest, digest, 32) == 0 && EVP_PKEY_up_ref(s->key) == 1)
			key = s->key;
	}
	uv_mutex_unlock(&r->signers_lock);
	return key;
}

/* Which CRL the trusted signers were checked against: a reload moves it on. */
static uint64_t signers_generation(struct relay *r)
{
	uv_mutex_lock(&r->signers_lock);
	uint64_t gen = r->signers_gen;
	uv_mutex_unlock(&r->signers_lock);
	return gen;
}

/* Trusts the signer checked against CRL generation gen, unless the CRL was
 * read again since: its check then counts for this command only. */
static void signer_keep(struct relay *r, const Exfleet__Command *cmd, const unsigned char digest[32],
			int64_t now_ms, uint64_t gen)
{
	const unsigned char *p = cmd->issuer_certificate.data;
	X509 *cert = d2i_X509(NULL, &p, (long)cmd->issuer_certificate.len);
	EVP_PKEY *key = cert ? X509_get_pubkey(cert) : NULL;
	X509_free(cert);
	ERR_clear_error();
	if (!key)
		return;
	uv_mutex_lock(&r->signers_lock);
	if (gen != r->signers_gen) {
		uv_mutex_unlock(&r->signers_lock);
		EVP_PKEY_free(key);
		return;
	}
	struct relay_signer *slot = &r->signers[0];
	for (int i = 0; i < RELAY_SIGNERS; i++) {
		if (!r->signers[i].key || memcmp(r->signers[i].digest, digest, 32) == 0) {
			slot = &r->signers[i];
			break;
		}
		if (r->signers[i].checked_ms < slot->checked_ms)
			slot = &r->signers[i]; /* the oldest goes */
	}
	EVP_PKEY_free(slot->key);
	memcpy(slot->digest, digest, 32);
	slot->key = key;
	slot->checked_ms = now_ms;
	uv_mutex_unlock(&r->signers_lock);
}

/* Defence in depth: whatever put the command in the store, one the agent
 * would refuse (not an operator's signature, another host's, expired) goes
 * no further. 1, or a negative error with c->reason. */
static int check_command(struct relay *r, struct relay_command *c, int64_t now_ms,
			 struct sign_memo *memo, unsigned *fast, unsigned *full)
{
	if (!r->verifier)
		return 1;
	unsigned char digest[32];
	int known = c->cmd->issuer_certificate.len > 0 &&
		    c->cmd->issuer_certificate.len <= SIGN_CERT_MAX;
	if (known)
		SHA256(c->cmd->issuer_certificate.data, c->cmd->issuer_certificate.len, digest);
	EVP_PKEY *key = known ? signer_find(r, digest, now_ms) : NULL;
	int rc;
	if (key) {
		/* The rest of what sign_verify_command checks, per command,
		 * but a batch's signature only once per chunk (the memo). The
		 * agent checks all of it again. */
		Exfleet__CommandBody *body = NULL;
		rc = sign_verify_command_memo(key, c->cmd, c->host_id, now_ms, RELAY_SKEW_MS, memo,
					      &body, c->reason, sizeof(c->reason));
		if (body)
			exfleet__command_body__free_unpacked(body, NULL);
		EVP_PKEY_free(key);
		(*fast)++;
	} else {
		Exfleet__CommandBody *body = NULL;
		char signer[SIGN_OPERATOR_MAX] = "";
		uint64_t gen = signers_generation(r);
		rc = sign_verify_command(r->verifier, c->cmd, c->host_id, now_ms, RELAY_SKEW_MS,
					 &body, signer, c->reason, sizeof(c->reason));
		if (body)
			exfleet__command_body__free_unpacked(body, NULL);
		if (rc == 0 && known)
			signer_keep(r, c->cmd, digest, now_ms, gen);
		(*full)++;
	}
	return rc == 0 ? 1 : rc;
}

/* The envelope goes out as it is (deliver); its decoding lives only as long
 * as the check. */
static int check(struct relay *r, struct relay_command *c, int64_t now_ms, struct sign_memo *memo,
		 unsigned *fast, unsigned *full)
{
	c->cmd = exfleet__command__unpack(NULL, c->len, c->envelope);
	if (!c->cmd) {
		snprintf(c->reason, sizeof(c->reason), "not a valid envelope");
		return UV_EPROTO;
	}
	int rc = check_command(r, c, now_ms, memo, fast, full);
	exfleet__command__free_unpacked(c->cmd, NULL);
	c->cmd = NULL;
	return rc;
}

static void check_work_cb(uv_work_t *req)
{
	struct check_work *w = req->data;
	for (unsigned i = 0; i < w->n; i++)
		w->verdicts[i] = check(w->r, w->cmds[i], w->now_ms, &w->memo, &w->fast, &w->full);
}

/* ---- the loop side ---- */

/* Sends the marks collected so far to the store, as one write. */
static void marks_flush(struct relay *r)
{
	if (r->nmarks == 0)
		return;
	store_commands_state(r->store, r->marks, r->nmarks, "delivered");
	r->marks = NULL;
	r->nmarks = r->marks_cap = 0;
}

static void mark_delivered(struct relay *r, const char *id)
{
	if (r->nmarks == r->marks_cap) {
		size_t cap = r->marks_cap ? r->marks_cap * 2 : 64;
		char(*grown)[STORE_COMMAND_ID_LEN] = realloc(r->marks, cap * sizeof(*grown));
		if (!grown) {
			/* Marked on its own, then. */
			store_command_state(r->store, id, "delivered");
			return;
		}
		r->marks = grown;
		r->marks_cap = cap;
	}
	snprintf(r->marks[r->nmarks++], STORE_COMMAND_ID_LEN, "%s", id);
}

/* Sends c on the host's session: 0 when it went out, -1 when the host is
 * not online. The store hears of it at the next marks_flush. */
static int deliver(struct relay *r, struct relay_command *c)
{
	struct agent_conn *a = hostmap_get(&r->srv->sessions, c->host_id);
	if (!a || a->state != AGENT_READY)
		return -1;
	/* CollectorMessage{command (field 3) = the envelope}: the bytes the
	 * operator signed, framed as they are rather than decoded and encoded
	 * again for each of a wave's thousands. */
	uint8_t *frame = malloc(FRAME_HEADER + 1 + 10 + c->len);
	if (!frame)
		return -1;
	uint8_t *p = frame + FRAME_HEADER;
	*p++ = (3 << 3) | 2;
	for (size_t v = c->len; ; v >>= 7) {
		*p++ = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		if (v <= 0x7f)
			break;
	}
	memcpy(p, c->envelope, c->len);
	int rc = tls_conn_send(&a->conn, frame, (size_t)(p - frame - FRAME_HEADER) + c->len);
	free(frame);
	if (rc < 0)
		return -1;
	log_msg(LOG_INFO, a->conn.peer, "command %s delivered", c->id);
	mark_delivered(r, c->id);
	r->delivered++;
	return 0;
}

static void waiting_add(struct relay *r, struct relay_command *c)
{
	struct relay_host *h = hostmap_get(&r->waiting, c->host_id);
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (h)
			snprintf(h->host_id, sizeof(h->host_id), "%s", c->host_id);
		if (!h || hostmap_put(&r->waiting, h->host_id, h) < 0) {
			log_err("relay: out of memory; command %s stays queued in the store", c->id);
			free(h);
			r->nqueued--;
			command_free(c);
			return;
		}
	}
	c->next = NULL;
	if (h->tail)
		h->tail->next = c;
	else
		h->head = c;
	h->tail = c;
}

/* Hands on the checked commands at the head of the pending list, in order:
 * refused ones are marked, the rest delivered or kept for their host. */
static void dispatch(struct relay *r)
{
	while (r->pending && !r->pending->in_check && r->pending->verdict != 0) {
		struct relay_command *c = r->pending;
		r->pending = c->next;
		if (!r->pending)
			r->pending_tail = NULL;
		if (c->verdict < 0) {
			log_warn("relay: command %s for %s refused, not delivered: %s", c->id,
				 c->host_id, c->reason);
			store_command_state(r->store, c->id,
					    c->verdict == UV_EPROTO	 ? "failed"
					    : c->verdict == UV_ETIMEDOUT ? "expired"
									 : "rejected");
			r->rejected++;
			r->nqueued--;
			command_free(c);
			continue;
		}
		/* A host's earlier commands that wait for it go first. */
		if (!hostmap_get(&r->waiting, c->host_id) && deliver(r, c) == 0) {
			r->nqueued--;
			command_free(c);
			continue;
		}
		waiting_add(r, c);
	}
	marks_flush(r);
}

/* Once closed and nothing is being checked: what the checks share. */
/* The signers trusted so far, forgotten (with signers_lock held, or
 * once no check runs). */
static void signers_forget(struct relay *r)
{
	for (int i = 0; i < RELAY_SIGNERS; i++) {
		EVP_PKEY_free(r->signers[i].key);
		r->signers[i].key = NULL;
	}
}

static void checks_free(struct relay *r)
{
	signers_forget(r);
	uv_mutex_destroy(&r->signers_lock);
	sign_verifier_free(r->verifier);
	r->verifier = NULL;
}

static void check_after_cb(uv_work_t *req, int status)
{
	struct check_work *w = req->data;
	struct relay *r = w->r;
	r->checking--;
	r->fast_checks += w->fast;
	r->full_checks += w->full;
	for (unsigned i = 0; i < w->n; i++) {
		w->cmds[i]->verdict = w->verdicts[i];
		w->cmds[i]->in_check = 0;
		if (r->closing)
			command_free(w->cmds[i]);
	}
	free(w);
	if (!r->closing)
		dispatch(r);
	else if (r->checking == 0)
		checks_free(r);
}

/* Puts the commands not yet sent for checking on the thread pool. */
static void check_start(struct relay *r, struct relay_command *from)
{
	int64_t now = util_now_ms();
	for (struct relay_command *c = from; c;) {
		struct check_work *w = calloc(1, sizeof(*w));
		if (!w) {
			/* Checked here instead: slower, never skipped. */
			unsigned fast = 0, full = 0;
			struct sign_memo memo = {0};
			for (; c; c = c->next)
				c->verdict = check(r, c, now, &memo, &fast, &full);
			dispatch(r);
			return;
		}
		w->r = r;
		w->now_ms = now;
		w->req.data = w;
		while (c && w->n < CHECK_CHUNK) {
			c->in_check = 1;
			w->cmds[w->n++] = c;
			c = c->next;
		}
		r->checking++;
		if (uv_queue_work(r->loop, &w->req, check_work_cb, check_after_cb) < 0) {
			check_work_cb(&w->req);
			check_after_cb(&w->req, 0);
		}
	}
}

struct take {
	struct relay *r;
	struct relay_command *first; /* the first taken this time */
};

static void take_cb(const struct store_command *sc, void *arg)
{
	struct take *t = arg;
	struct relay *r = t->r;
	if (r->nqueued >= RELAY_MAX) {
		log_err("relay: %d commands waiting; command %s stays queued in the store",
			RELAY_MAX, sc->command_id);
		return;
	}
	struct relay_command *c = calloc(1, sizeof(*c));
	if (!c || !(c->envelope = malloc(sc->len ? sc->len : 1))) {
		free(c);
		return;
	}
	snprintf(c->id, sizeof(c->id), "%s", sc->command_id);
	snprintf(c->host_id, sizeof(c->host_id), "%s", sc->host_id);
	c->expires_ms = sc->expires_at_ms;
	memcpy(c->envelope, sc->envelope, sc->len);
	c->len = sc->len;
	/* Append: commands for a host go out in the order they were made. */
	if (r->pending_tail)
		r->pending_tail->next = c;
	else
		r->pending = c;
	r->pending_tail = c;
	r->nqueued++;
	if (!t->first)
		t->first = c;
}

/* Commands whose host never came in time. */
static void expire(struct relay *r, int64_t now)
{
	for (size_t i = 0; i < r->waiting.cap; i++) {
		struct relay_host *h = r->waiting.slots[i].key ? r->waiting.slots[i].value : NULL;
		if (!h)
			continue;
		struct relay_command **pp = &h->head, *prev = NULL;
		while (*pp) {
			struct relay_command *c = *pp;
			if (!c->expires_ms || c->expires_ms >= now) {
				prev = c;
				pp = &c->next;
				continue;
			}
			log_warn("relay: command %s for %s expired before its host was online", c->id,
				 c->host_id);
			store_command_state(r->store, c->id, "expired");
			r->expired++;
			r->nqueued--;
			*pp = c->next;
			if (h->tail == c)
				h->tail = prev;
			command_free(c);
		}
		if (!h->head) {
			hostmap_remove(&r->waiting, h->host_id, h);
			free(h);
			i--; /* the removal may have moved another entry into this slot */
		}
	}
}

void relay_poll(struct relay *r)
{
	if (r->closing)
		return;
	struct take t = {r, NULL};
	store_queued_commands(r->store, &r->after, take_cb, &t);
	if (t.first)
		check_start(r, t.first);
	int64_t now = util_now_ms();
	if (now - r->last_flush_ms >= EXPIRE_MS) {
		r->last_flush_ms = now;
		expire(r, now);
	}
}

void relay_host_ready(struct relay *r, const char *host_id)
{
	struct relay_host *h = hostmap_get(&r->waiting, host_id);
	if (!h)
		return;
	while (h->head) {
		struct relay_command *c = h->head;
		if (deliver(r, c) < 0)
			break;
		h->head = c->next;
		r->nqueued--;
		command_free(c);
	}
	marks_flush(r);
	if (h->head)
		return;
	hostmap_remove(&r->waiting, h->host_id, h);
	free(h);
}

static void timer_cb(uv_timer_t *t)
{
	relay_poll(t->data);
}

void relay_init(struct relay *r, uv_loop_t *loop, struct server *srv, struct store *store)
{
	memset(r, 0, sizeof(*r));
	r->srv = srv;
	r->store = store;
	r->loop = loop;
	hostmap_init(&r->waiting);
	uv_mutex_init(&r->signers_lock);
	uv_timer_init(loop, &r->timer);
	r->timer.data = r;
	uv_timer_start(&r->timer, timer_cb, 0, POLL_MS);
}

int relay_reload_crl(struct relay *r, char *err, size_t errlen)
{
	if (!r->verifier)
		return 0;
	int rc = sign_verifier_reload_crl(r->verifier, err, errlen);
	if (rc < 0)
		return rc;
	uv_mutex_lock(&r->signers_lock);
	r->signers_gen++;
	signers_forget(r);
	uv_mutex_unlock(&r->signers_lock);
	return 0;
}

void relay_close(struct relay *r)
{
	r->closing = 1;
	uv_timer_stop(&r->timer);
	uv_close((uv_handle_t *)&r->timer, NULL);
	/* What is being checked belongs to its work item until it ends. */
	while (r->pending) {
		struct relay_command *next = r->pending->next;
		if (!r->pending->in_check)
			command_free(r->pending);
		r->pending = next;
	}
	r->pending_tail = NULL;
	for (size_t i = 0; i < r->waiting.cap; i++) {
		struct relay_host *h = r->waiting.slots[i].key ? r->waiting.slots[i].value : NULL;
		if (!h)
			continue;
		while (h->head) {
			struct relay_command *next = h->head->next;
			command_free(h->head);
			h->head = next;
		}
		free(h);
	}
	hostmap_free(&r->waiting);
	free(r->marks); /* flushed after each dispatch: none are left */
	r->marks = NULL;
	r->nqueued = 0;
	if (!r->checking)
		checks_free(r);
}
