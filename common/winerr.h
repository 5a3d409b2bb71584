/* Win32 error codes by name, and the text Windows gives for each, for the
 * agent's results and the collector's evidence alike. */
#ifndef EXFLEET_WINERR_H
#define EXFLEET_WINERR_H

#include <stdint.h>

#define WIN32_OK 0
#define WIN32_FILE_NOT_FOUND 2
#define WIN32_ACCESS_DENIED 5
#define WIN32_NOT_ENOUGH_MEMORY 8
#define WIN32_INVALID_DATA 13
#define WIN32_DEPENDENT_SERVICES_RUNNING 1051
#define WIN32_SERVICE_REQUEST_TIMEOUT 1053
#define WIN32_SERVICE_ALREADY_RUNNING 1056
#define WIN32_SERVICE_DISABLED 1058
#define WIN32_SERVICE_DOES_NOT_EXIST 1060
#define WIN32_SERVICE_NOT_ACTIVE 1062
#define WIN32_SERVICE_DEPENDENCY_FAIL 1068
#define WIN32_SERVICE_LOGON_FAILED 1069
#define WIN32_NO_SUCH_PRIVILEGE 1313
#define WIN32_PRIVILEGE_NOT_HELD 1314
#define WIN32_LOGON_FAILURE 1326
#define WIN32_NONE_MAPPED 1332
#define WIN32_LOGON_TYPE_NOT_GRANTED 1385

/* FormatMessage's wording for code, or "Win32 error N" for codes not known. */
const char *winerr_text(uint32_t code);

#endif
