/* Every message of the v1 schema, with every field set, survives encode and
 * decode; bad payloads are refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"
#include "wire.h"

/* Fails unless every field of m (and of its sub-messages) holds a non-default
 * value, so a field added to the schema without a test fails here. In a
 * oneof only the chosen member is checked. */
static void assert_all_fields_set(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *base = (const char *)m;
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t chosen = *(const uint32_t *)(base + f->quantifier_offset);
			if (chosen != f->id)
				continue;
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			if (n == 0)
				fail_msg("%s.%s is empty", d->short_name, f->name);
			if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
				ProtobufCMessage **items = *(ProtobufCMessage ***)(base + f->offset);
				for (size_t k = 0; k < n; k++)
					assert_all_fields_set(items[k]);
			}
			continue;
		}
		const void *v = base + f->offset;
		int set = 0;
		switch (f->type) {
		case PROTOBUF_C_TYPE_STRING:
			set = *(const char *const *)v && **(const char *const *)v;
			break;
		case PROTOBUF_C_TYPE_BYTES:
			set = ((const ProtobufCBinaryData *)v)->len > 0;
			break;
		case PROTOBUF_C_TYPE_MESSAGE:
			set = *(const ProtobufCMessage *const *)v != NULL;
			if (set)
				assert_all_fields_set(*(const ProtobufCMessage *const *)v);
			else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
				fail_msg("%s.%s chosen but NULL", d->short_name, f->name);
			else
				/* An empty message type (Rescan) has nothing to set. */
				set = ((const ProtobufCMessageDescriptor *)f->descriptor)->n_fields == 0;
			break;
		case PROTOBUF_C_TYPE_BOOL:
			set = *(const protobuf_c_boolean *)v;
			break;
		case PROTOBUF_C_TYPE_UINT64:
		case PROTOBUF_C_TYPE_INT64:
			set = *(const uint64_t *)v != 0;
			break;
		default:
			set = *(const uint32_t *)v != 0;
			break;
		}
		if (!set)
			fail_msg("%s.%s is not set", d->short_name, f->name);
	}
}

/* Encodes, decodes, re-encodes: the bytes must be identical. */
static void round_trip_agent(Exfleet__AgentMessage *m)
{
	assert_all_fields_set(&m->base);
	size_t len;
	uint8_t *buf = wire_pack_agent(m, &len);
	assert_non_null(buf);
	char why[128];
	Exfleet__AgentMessage *back = wire_decode_agent(buf + FRAME_HEADER, len, why, sizeof(why));
	assert_non_null(back);
	assert_int_equal(back->msg_case, m->msg_case);
	size_t len2;
	uint8_t *buf2 = wire_pack_agent(back, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(buf + FRAME_HEADER, buf2 + FRAME_HEADER, len);
	assert_all_fields_set(&back->base);
	exfleet__agent_message__free_unpacked(back, NULL);
	free(buf);
	free(buf2);
}

static void round_trip_collector(Exfleet__CollectorMessage *m)
{
	assert_all_fields_set(&m->base);
	size_t len;
	uint8_t *buf = wire_pack_collector(m, &len);
	assert_non_null(buf);
	char why[128];
	Exfleet__CollectorMessage *back =
		wire_decode_collector(buf + FRAME_HEADER, len, why, sizeof(why));
	assert_non_null(back);
	assert_int_equal(back->msg_case, m->msg_case);
	size_t len2;
	uint8_t *buf2 = wire_pack_collector(back, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(buf + FRAME_HEADER, buf2 + FRAME_HEADER, len);
	exfleet__collector_message__free_unpacked(back, NULL);
	free(buf);
	free(buf2);
}

static uint8_t key32[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
			    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static char *two_strings[] = {"first", "second"};

static void test_hello(void **state)
{
	Exfleet__Label site = EXFLEET__LABEL__INIT, wave = EXFLEET__LABEL__INIT;
	site.key = "site";
	site.value = "paris";
	wave.key = "wave";
	wave.value = "3";
	Exfleet__Label *labels[] = {&site, &wave};
	Exfleet__Hello h = EXFLEET__HELLO__INIT;
	h.protocol_version = 1;
	h.host_id = "EXCH01";
	h.agent_version = "0.1.0";
	h.platform = "windows 5.0.2195";
	h.n_capabilities = 2;
	h.capabilities = two_strings;
	h.n_labels = 2;
	h.labels = labels;
	h.sealing_public_key.data = key32;
	h.sealing_public_key.len = 32;
	h.sealing_key_signature.data = key32;
	h.sealing_key_signature.len = 32;
	h.highest_sequence = 1234567890123ull;
	h.spool_dropped = 7;
	h.lowest_sequence = 1000;
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_HELLO;
	m.hello = &h;
	round_trip_agent(&m);

	/* And a field-by-field look at one decode. */
	size_t len;
	uint8_t *buf = wire_pack_agent(&m, &len);
	char why[128];
	Exfleet__AgentMessage *back = wire_decode_agent(buf + FRAME_HEADER, len, why, sizeof(why));
	assert_string_equal(back->hello->host_id, "EXCH01");
	assert_int_equal(back->hello->highest_sequence, 1234567890123ull);
	assert_string_equal(back->hello->labels[1]->value, "3");
	assert_memory_equal(back->hello->sealing_public_key.data, key32, 32);
	assert_string_equal(wire_agent_kind(back), "Hello");
	exfleet__agent_message__free_unpacked(back, NULL);
	free(buf);
}

static void test_snapshot(void **state)
{
	char *deps[] = {"MSExchangeDS"};
	char *rights[] = {"SeServiceLogonRight", "SeTcbPrivilege"};
	Exfleet__Service svc = EXFLEET__SERVICE__INIT;
	svc.name = "MSExchangeIS";
	svc.display_name = "Microsoft Exchange Information Store";
	svc.state = EXFLEET__SERVICE_STATE__SERVICE_STOPPED;
	svc.start_type = EXFLEET__START_TYPE__START_AUTO;
	svc.logon_account = ".\\exsvc";
	svc.win32_exit_code = 1069;
	svc.service_exit_code = 5;
	svc.n_dependencies = 1;
	svc.dependencies = deps;
	svc.n_account_rights = 2;
	svc.account_rights = rights;
	svc.account_status = EXFLEET__ACCOUNT_STATUS__ACCOUNT_MISSING;
	svc.rights_error = 1332;
	Exfleet__Service *svcs[] = {&svc};
	Exfleet__Snapshot s = EXFLEET__SNAPSHOT__INIT;
	s.sequence = 42;
	s.observed_at_ms = 1764410531000;
	s.computer_name = "EXCH01";
	s.role = EXFLEET__DOMAIN_ROLE__ROLE_PRIMARY_DC;
	s.domain = "CORP";
	s.role_changed_at_ms = 1764410518000;
	s.sam_present = 1;
	s.n_services = 1;
	s.services = svcs;
	s.exchange_version = "5.5.2653";
	s.exchange_service_pack = 3;
	s.service_pack_needs_reapply = 1;
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_SNAPSHOT;
	m.snapshot = &s;
	round_trip_agent(&m);
}

static void test_event_batch(void **state)
{
	char *strings[] = {"MSExchangeIS", "%%1069"};
	Exfleet__Event e = EXFLEET__EVENT__INIT;
	e.sequence = 43;
	e.record_number = 9001;
	e.log = "Application";
	e.source = "MSExchangePOP3";
	e.event_id = 13003;
	e.type = EXFLEET__EVENT_TYPE__EVENT_ERROR;
	e.category = 2;
	e.category_name = "Authentication";
	e.time_generated_ms = 1764410600000;
	e.n_insertion_strings = 2;
	e.insertion_strings = strings;
	e.message = "A required privilege is not held by the client";
	e.computer = "EXCH01";
	Exfleet__Event *events[] = {&e, &e};
	Exfleet__EventBatch b = EXFLEET__EVENT_BATCH__INIT;
	b.n_events = 2;
	b.events = events;
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_EVENTS;
	m.events = &b;
	round_trip_agent(&m);
}

static void test_heartbeat_both_ways(void **state)
{
	Exfleet__Heartbeat hb = EXFLEET__HEARTBEAT__INIT;
	hb.sent_at_ms = 1764410600000;
	hb.highest_sequence = 99;
	hb.spool_dropped = 3;
	hb.spool_bytes = 65536;
	Exfleet__AgentMessage a = EXFLEET__AGENT_MESSAGE__INIT;
	a.msg_case = EXFLEET__AGENT_MESSAGE__MSG_HEARTBEAT;
	a.heartbeat = &hb;
	round_trip_agent(&a);
	Exfleet__CollectorMessage c = EXFLEET__COLLECTOR_MESSAGE__INIT;
	c.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_HEARTBEAT;
	c.heartbeat = &hb;
	round_trip_collector(&c);
}

static void test_command_result(void **state)
{
	Exfleet__StepResult step = EXFLEET__STEP_RESULT__INIT;
	step.step = "verify-credentials";
	step.target = "CORP\\exsvc";
	step.ok = 1;
	step.win32_error = 1326;
	step.message = "The user name or password is incorrect.";
	step.finished_at_ms = 1764410700000;
	Exfleet__StepResult *steps[] = {&step};
	Exfleet__CommandResult r = EXFLEET__COMMAND_RESULT__INIT;
	r.sequence = 77;
	r.command_id = "0123456789abcdef0123456789abcdef";
	r.status = EXFLEET__COMMAND_STATUS__COMMAND_FAILED;
	r.reason = "verify-credentials failed";
	r.n_steps = 1;
	r.steps = steps;
	r.started_at_ms = 1764410699000;
	r.finished_at_ms = 1764410700000;
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_COMMAND_RESULT;
	m.command_result = &r;
	round_trip_agent(&m);
}

static void test_welcome_and_ack(void **state)
{
	Exfleet__Welcome w = EXFLEET__WELCOME__INIT;
	w.protocol_version = 1;
	w.collector_id = "collector.corp.example";
	w.server_time_ms = 1764410531000;
	w.heartbeat_interval_s = 30;
	w.highest_stored_sequence = 41;
	w.retry_after_ms = 2500;
	w.error = "protocol version 9 is not supported (this collector speaks 1)";
	w.max_frame_size = FRAME_MAX_DEFAULT;
	Exfleet__CollectorMessage m = EXFLEET__COLLECTOR_MESSAGE__INIT;
	m.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_WELCOME;
	m.welcome = &w;
	round_trip_collector(&m);

	Exfleet__Ack ack = EXFLEET__ACK__INIT;
	ack.sequence = 41;
	m.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_ACK;
	m.ack = &ack;
	round_trip_collector(&m);
}

/* Encodes body into cmd and checks the signed bytes decode to every field. */
static void round_trip_command(Exfleet__CommandBody *body)
{
	body->id = "0123456789abcdef0123456789abcdef";
	body->target_host_id = "EXCH01";
	body->issued_at_ms = 1764410531000;
	body->expires_at_ms = 1764414131000;
	assert_all_fields_set(&body->base);
	size_t n = exfleet__command_body__get_packed_size(body);
	uint8_t *bytes = malloc(n);
	exfleet__command_body__pack(body, bytes);
	Exfleet__Command cmd = EXFLEET__COMMAND__INIT;
	cmd.body.data = bytes;
	cmd.body.len = n;
	cmd.signature.data = key32;
	cmd.signature.len = 32;
	cmd.issuer_certificate.data = key32;
	cmd.issuer_certificate.len = 16;
	ProtobufCBinaryData path[2] = {{32, key32}, {32, key32}};
	cmd.batch_size = 3;
	cmd.batch_index = 2;
	cmd.batch_path = path;
	cmd.n_batch_path = 2;
	Exfleet__CollectorMessage m = EXFLEET__COLLECTOR_MESSAGE__INIT;
	m.msg_case = EXFLEET__COLLECTOR_MESSAGE__MSG_COMMAND;
	m.command = &cmd;
	round_trip_collector(&m);

	Exfleet__CommandBody *back = exfleet__command_body__unpack(NULL, n, bytes);
	assert_non_null(back);
	assert_int_equal(back->action_case, body->action_case);
	assert_all_fields_set(&back->base);
	exfleet__command_body__free_unpacked(back, NULL);
	free(bytes);
}

static void test_every_command_action(void **state)
{
	Exfleet__SealedSecret sealed = EXFLEET__SEALED_SECRET__INIT;
	sealed.ephemeral_public_key.data = key32;
	sealed.ephemeral_public_key.len = 32;
	sealed.nonce.data = key32;
	sealed.nonce.len = 12;
	sealed.ciphertext.data = key32;
	sealed.ciphertext.len = 32;

	Exfleet__CommandBody body = EXFLEET__COMMAND_BODY__INIT;
	Exfleet__SetServiceCredentials set = EXFLEET__SET_SERVICE_CREDENTIALS__INIT;
	set.n_services = 2;
	set.services = two_strings;
	set.account = "CORP\\exsvc";
	set.password = &sealed;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_SET_SERVICE_CREDENTIALS;
	body.set_service_credentials = &set;
	round_trip_command(&body);

	Exfleet__GrantRights grant = EXFLEET__GRANT_RIGHTS__INIT;
	grant.account = "CORP\\exsvc";
	grant.n_rights = 2;
	grant.rights = two_strings;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_GRANT_RIGHTS;
	body.grant_rights = &grant;
	round_trip_command(&body);

	Exfleet__RestartServices restart = EXFLEET__RESTART_SERVICES__INIT;
	restart.n_services = 2;
	restart.services = two_strings;
	restart.timeout_s = 120;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESTART_SERVICES;
	body.restart_services = &restart;
	round_trip_command(&body);

	Exfleet__VerifyCredentials verify = EXFLEET__VERIFY_CREDENTIALS__INIT;
	verify.account = "CORP\\exsvc";
	verify.password = &sealed;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_VERIFY_CREDENTIALS;
	body.verify_credentials = &verify;
	round_trip_command(&body);

	Exfleet__ReapplyServicePack sp = EXFLEET__REAPPLY_SERVICE_PACK__INIT;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_REAPPLY_SERVICE_PACK;
	body.reapply_service_pack = &sp;
	round_trip_command(&body);

	Exfleet__Rescan rescan = EXFLEET__RESCAN__INIT;
	body.action_case = EXFLEET__COMMAND_BODY__ACTION_RESCAN;
	body.rescan = &rescan;
	round_trip_command(&body);
}

static void test_garbage_is_refused(void **state)
{
	char why[128];
	/* Field 1 declared length-delimited with a length past the end. */
	const uint8_t truncated[] = {0x0a, 0x50, 0x01};
	assert_null(wire_decode_agent(truncated, sizeof(truncated), why, sizeof(why)));
	assert_string_equal(why, "undecodable AgentMessage (3 bytes)");
	/* A wire type that does not exist. */
	const uint8_t badtype[] = {0x0f, 0x00};
	assert_null(wire_decode_collector(badtype, sizeof(badtype), why, sizeof(why)));
	assert_string_equal(why, "undecodable CollectorMessage (2 bytes)");
	/* Well-formed protobuf that carries no message: only an unknown field. */
	const uint8_t empty[] = {0x78, 0x01};
	assert_null(wire_decode_agent(empty, sizeof(empty), why, sizeof(why)));
	assert_string_equal(why, "AgentMessage with no message in it (2 bytes)");
	/* Plain text. */
	const char *text = "GET / HTTP/1.1\r\n\r\n";
	assert_null(wire_decode_agent((const uint8_t *)text, strlen(text), why, sizeof(why)));
}

static void test_unknown_fields_are_ignored(void **state)
{
	/* A Heartbeat from a newer agent with an extra field 15 (varint 5). */
	Exfleet__Heartbeat hb = EXFLEET__HEARTBEAT__INIT;
	hb.highest_sequence = 5;
	Exfleet__AgentMessage m = EXFLEET__AGENT_MESSAGE__INIT;
	m.msg_case = EXFLEET__AGENT_MESSAGE__MSG_HEARTBEAT;
	m.heartbeat = &hb;
	size_t len;
	uint8_t *buf = wire_pack_agent(&m, &len);
	/* Envelope field 4 is the heartbeat: append the unknown field inside it. */
	uint8_t *p = buf + FRAME_HEADER;
	assert_int_equal(p[0], 0x22);
	uint8_t *grown = malloc(len + 2);
	memcpy(grown, p, len);
	grown[1] = (uint8_t)(p[1] + 2);
	grown[len] = 0x78; /* field 15, varint */
	grown[len + 1] = 0x05;
	char why[128];
	Exfleet__AgentMessage *back = wire_decode_agent(grown, len + 2, why, sizeof(why));
	assert_non_null(back);
	assert_int_equal(back->heartbeat->highest_sequence, 5);
	exfleet__agent_message__free_unpacked(back, NULL);
	free(grown);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_snapshot),
		cmocka_unit_test(test_event_batch),
		cmocka_unit_test(test_heartbeat_both_ways),
		cmocka_unit_test(test_command_result),
		cmocka_unit_test(test_welcome_and_ack),
		cmocka_unit_test(test_every_command_action),
		cmocka_unit_test(test_garbage_is_refused),
		cmocka_unit_test(test_unknown_fields_are_ignored),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
