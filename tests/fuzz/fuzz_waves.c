/* libFuzzer harness for the wave plan CSV: any bytes must give 0 with
 * entries that obey waves.h, or an error with no entries and at least one
 * message; both outputs must free cleanly. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "waves.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int host_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > WAVES_HOST_MAX || s[0] == '.' || s[0] == '-')
		return 0;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wave_plan plan;
	struct wave_errors errors;
	/* Exact size, no NUL after it: the parser must keep to len. */
	char *text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	int rc = waves_parse("fuzz.csv", text, size, &plan, &errors);
	if (rc == 0) {
		if (errors.count || !plan.count)
			abort();
		for (size_t i = 0; i < plan.count; i++) {
			const struct wave_entry *e = &plan.entries[i];
			size_t d = strlen(e->planned_date);
			if (!host_ok(e->host_id) || !e->wave[0] || (d != 0 && d != WAVES_DATE_LEN))
				abort();
		}
	} else if (plan.entries || plan.count || !errors.count || errors.total < 1) {
		abort();
	}
	for (size_t i = 0; i < errors.count; i++)
		for (const char *c = errors.lines[i]; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
				abort(); /* messages are printable ASCII */
	wave_plan_free(&plan);
	wave_errors_free(&errors);
	free(text);
	return 0;
}
