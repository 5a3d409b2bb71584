#include "winerr.h"

#include <stddef.h>
#include <stdio.h>

static const struct {
	uint32_t code;
	const char *text;
} win32_texts[] = {
	{WIN32_OK, "The operation completed successfully."},
	{WIN32_FILE_NOT_FOUND, "The system cannot find the file specified."},
	{WIN32_ACCESS_DENIED, "Access is denied."},
	{WIN32_NOT_ENOUGH_MEMORY, "Not enough storage is available to process this command."},
	{WIN32_INVALID_DATA, "The data is invalid."},
	{WIN32_DEPENDENT_SERVICES_RUNNING,
	 "A stop control has been sent to a service that other running services are dependent on."},
	{WIN32_SERVICE_REQUEST_TIMEOUT,
	 "The service did not respond to the start or control request in a timely fashion."},
	{WIN32_SERVICE_ALREADY_RUNNING, "An instance of the service is already running."},
	{WIN32_SERVICE_DISABLED,
	 "The service cannot be started, either because it is disabled or because it has no enabled "
	 "devices associated with it."},
	{WIN32_SERVICE_DOES_NOT_EXIST, "The specified service does not exist as an installed service."},
	{WIN32_SERVICE_NOT_ACTIVE, "The service has not been started."},
	{WIN32_SERVICE_DEPENDENCY_FAIL, "The dependency service or group failed to start."},
	{WIN32_SERVICE_LOGON_FAILED, "The service did not start due to a logon failure."},
	{WIN32_NO_SUCH_PRIVILEGE, "A specified privilege does not exist."},
	{WIN32_PRIVILEGE_NOT_HELD, "A required privilege is not held by the client."},
	{WIN32_LOGON_FAILURE, "Logon failure: unknown user name or bad password."},
	{WIN32_NONE_MAPPED, "No mapping between account names and security IDs was done."},
	{WIN32_LOGON_TYPE_NOT_GRANTED,
	 "Logon failure: the user has not been granted the requested logon type at this computer."},
};

const char *winerr_text(uint32_t code)
{
	static _Thread_local char unknown[32];
	for (size_t i = 0; i < sizeof(win32_texts) / sizeof(win32_texts[0]); i++)
		if (win32_texts[i].code == code)
			return win32_texts[i].text;
	snprintf(unknown, sizeof(unknown), "Win32 error %u", code);
	return unknown;
}
