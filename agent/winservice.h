/* exfleet-agent as a Windows service (agent/winsvc.c, Windows only). Not
 * named winsvc.h: that is the Windows SDK header <windows.h> includes.
 *
 *   install [--config PATH]   register the service (LocalSystem, automatic
 *                             start, restarted on failure)
 *   uninstall                 stop it and remove it
 *   run [--config PATH]       what the service control manager starts
 * Anything else is the agent's own command line (agent_main), with
 * --config defaulting to %ProgramData%\exfleet\agent.ini. */
#ifndef EXFLEET_WINSERVICE_H
#define EXFLEET_WINSERVICE_H

/* main() on Windows; argv is taken from the UTF-16 command line, as UTF-8. */
int winsvc_main(int argc, char **argv);

#endif
