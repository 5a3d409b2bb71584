/* Both envelopes, and the signed command body inside a Command, decoded from
 * arbitrary bytes: no crash, no leak, and anything that decodes re-encodes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "frame.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[160];
	Exfleet__AgentMessage *a = wire_decode_agent(data, size, why, sizeof(why));
	if (a) {
		size_t len;
		uint8_t *buf = wire_pack_agent(a, &len);
		free(buf);
		exfleet__agent_message__free_unpacked(a, NULL);
	}
	Exfleet__CollectorMessage *c = wire_decode_collector(data, size, why, sizeof(why));
	if (c) {
		if (c->msg_case == EXFLEET__COLLECTOR_MESSAGE__MSG_COMMAND) {
			const ProtobufCBinaryData *body = &c->command->body;
			Exfleet__CommandBody *b =
				exfleet__command_body__unpack(NULL, body->len, body->data);
			if (b)
				exfleet__command_body__free_unpacked(b, NULL);
		}
		size_t len;
		uint8_t *buf = wire_pack_collector(c, &len);
		free(buf);
		exfleet__collector_message__free_unpacked(c, NULL);
	}
	return 0;
}
