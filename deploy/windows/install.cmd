@echo off
rem Installs the exfleet agent where PowerShell is not available (Windows 2000,
rem Windows Server 2003): the same steps as install.ps1, with cacls.
rem
rem   install.cmd SOURCE_DIR
rem
rem SOURCE_DIR holds exfleet-agent.exe, agent.ini (its [tls] paths relative to
rem it: keys\ca.crt, keys\agent.crt, keys\agent.key), ca.crt, agent.crt and
rem agent.key. Run it as an administrator.
setlocal
if "%~1"=="" (
  echo usage: install.cmd SOURCE_DIR
  exit /b 2
)
set "SRC=%~1"
for %%f in (exfleet-agent.exe agent.ini ca.crt agent.crt agent.key) do (
  if not exist "%SRC%\%%f" (
    echo install.cmd: %SRC%\%%f is missing
    exit /b 1
  )
)

rem The folder the agent defaults to: %ProgramData% from Vista on, else
rem All Users\Application Data.
if defined ProgramData (
  set "DATA=%ProgramData%\exfleet"
) else (
  set "DATA=%ALLUSERSPROFILE%\Application Data\exfleet"
)
set "BIN=%ProgramFiles%\exfleet"

sc query exfleet >nul 2>&1
if not errorlevel 1 (
  echo install.cmd: the service 'exfleet' exists: run "%BIN%\exfleet-agent.exe" uninstall first
  exit /b 1
)

for %%d in ("%BIN%" "%DATA%" "%DATA%\keys" "%DATA%\spool" "%DATA%\logs") do (
  if not exist %%d mkdir %%d
)
rem "if errorlevel 1" after each step rather than "||": Wine's cmd passes the
rem space before "||" on to copy, which then finds no such folder.
copy /y "%SRC%\exfleet-agent.exe" "%BIN%\" >nul
if errorlevel 1 exit /b 1
copy /y "%SRC%\agent.ini" "%DATA%\" >nul
if errorlevel 1 exit /b 1

rem Keys: SYSTEM and Administrators only. cacls takes account names, which
rem are English here: on a localized system use the local names instead.
echo y| cacls "%DATA%\keys" /G SYSTEM:F Administrators:F >nul
if errorlevel 1 (
  echo install.cmd: cacls failed on %DATA%\keys
  exit /b 1
)
copy /y "%SRC%\ca.crt" "%DATA%\keys\" >nul
if errorlevel 1 exit /b 1
copy /y "%SRC%\agent.crt" "%DATA%\keys\" >nul
if errorlevel 1 exit /b 1
copy /y "%SRC%\agent.key" "%DATA%\keys\" >nul
if errorlevel 1 exit /b 1

"%BIN%\exfleet-agent.exe" install --config "%DATA%\agent.ini"
if errorlevel 1 exit /b 1
net start exfleet
if errorlevel 1 exit /b 1
echo log: %DATA%\logs\agent.log
endlocal
