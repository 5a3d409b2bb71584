/* libFuzzer harness for the simulated host's loader: any bytes, as a host
 * file, must load or fail with a message. A host that loads must give a
 * snapshot and its events, survive what happens in the field (a logon burst,
 * dcpromo, a reboot, the repair actions), and save to a document that loads
 * again. Nothing touches the disk. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_everything(const struct sim_host *h)
{
	Exfleet__Snapshot *snap;
	Exfleet__Event **events;
	size_t n;
	char cursor[SIM_CURSOR_MAX] = "", err[256];
	if (sim_host_snapshot(h, &snap) == 0) {
		/* The snapshot must encode: it goes to the spool as it is. */
		size_t len = exfleet__snapshot__get_packed_size(snap);
		uint8_t *buf = malloc(len ? len : 1);
		if (buf) {
			if (exfleet__snapshot__pack(snap, buf) != len)
				abort();
			free(buf);
		}
		exfleet__snapshot__free_unpacked(snap, NULL);
	}
	for (int page = 0; page < 3; page++) {
		if (sim_host_read_events(h, cursor, sizeof(cursor), 7, &events, &n, err,
					 sizeof(err)) < 0)
			break;
		sim_events_free(events, n);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sim_host *h = NULL, *again = NULL;
	char err[512], *text = NULL;
	size_t len;
	if (sim_host_load_buffer("fuzz.json", (const char *)data, size, &h, err, sizeof(err)) < 0) {
		if (!err[0])
			abort(); /* every failure says why */
		return 0;
	}
	read_everything(h);

	struct sim_logon_counts pop3, imap4;
	sim_host_logon(h, 3, 2, &pop3, &imap4);
	if (h->n_services > 0) {
		const char *name = h->services[h->n_services - 1].name;
		sim_host_stop_service(h, name);
		sim_host_start_service(h, name);
		sim_host_set_service_credentials(h, h->services[0].name, h->services[0].logon_account,
						 "pw");
	}
	sim_host_grant_right(h, "CORP\\exsvc", "SeTcbPrivilege");
	sim_host_dcpromo(h, size & 1);
	sim_host_run_installer(h, "update.exe", "-s");
	read_everything(h);

	if (sim_host_dump(h, &text, &len) == 0) {
		if (sim_host_load_buffer("again.json", text, len, &again, err, sizeof(err)) < 0) {
			fprintf(stderr, "a saved host does not load: %s\n", err);
			abort();
		}
	}
	free(text);
	sim_host_free(again);
	sim_host_free(h);
	return 0;
}
