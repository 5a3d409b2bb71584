<#
.SYNOPSIS
  Installs the exfleet agent on this Windows server as the service "exfleet".

.DESCRIPTION
  Copies exfleet-agent.exe to -InstallDir, the configuration and the
  certificates to the data folder (%ProgramData%\exfleet; on Windows 2000/2003
  "All Users\Application Data\exfleet"), restricts the keys folder to SYSTEM and
  Administrators, checks the configuration, registers the service (LocalSystem,
  automatic start, restarted on failure) and starts it.

  Either give -Config (an agent.ini whose [tls] paths are relative to it, e.g.
  keys\ca.crt) or let the script write one from -HostId, -Collector and
  -CollectorName. Run again with -Force to replace an installed agent.

.EXAMPLE
  .\install.ps1 -HostId EXCH001 -Collector collector.corp.example:7443 `
      -CollectorName collector.corp.example -CA ca.crt -Cert EXCH001.crt -Key EXCH001.key

.EXAMPLE
  .\install.ps1 -Config agent.ini -CA ca.crt -Cert EXCH001.crt -Key EXCH001.key -Force
#>
[CmdletBinding()]
param(
    [string]$Binary = (Join-Path $PSScriptRoot 'exfleet-agent.exe'),
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'exfleet'),
    [string]$Config,
    [string]$HostId,
    [string]$Collector,
    [string]$CollectorName,
    [Parameter(Mandatory = $true)][string]$CA,
    [Parameter(Mandatory = $true)][string]$Cert,
    [Parameter(Mandatory = $true)][string]$Key,
    [string]$Crl,
    [switch]$Force
)
$ErrorActionPreference = 'Stop'

function Fail([string]$msg) {
    Write-Error "install.ps1: $msg"
    exit 1
}

$admin = ([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()
         ).IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
if (-not $admin) { Fail 'run this from an elevated PowerShell (as an administrator)' }
foreach ($f in @($Binary, $CA, $Cert, $Key) + @($Config, $Crl | Where-Object { $_ })) {
    if (-not (Test-Path -LiteralPath $f -PathType Leaf)) { Fail "${f}: no such file" }
}
if (-not $Config -and -not ($HostId -and $Collector -and $CollectorName)) {
    Fail 'give -Config FILE, or -HostId, -Collector and -CollectorName to write one'
}

# The folder the agent itself defaults to (CSIDL_COMMON_APPDATA).
$data = Join-Path ([Environment]::GetFolderPath('CommonApplicationData')) 'exfleet'
$keys = Join-Path $data 'keys'
$exe = Join-Path $InstallDir 'exfleet-agent.exe'
$ini = Join-Path $data 'agent.ini'

if (Get-Service -Name exfleet -ErrorAction SilentlyContinue) {
    if (-not $Force) { Fail "the service 'exfleet' exists: add -Force to replace it" }
    Write-Host 'removing the installed service'
    & $exe uninstall
    if ($LASTEXITCODE -ne 0) { Fail "'$exe uninstall' failed" }
}

foreach ($d in @($InstallDir, $data, $keys, (Join-Path $data 'spool'), (Join-Path $data 'logs'))) {
    New-Item -ItemType Directory -Force -Path $d | Out-Null
}
Copy-Item -LiteralPath $Binary -Destination $exe -Force

# Keys: SYSTEM and Administrators only, nothing inherited (well-known SIDs,
# so the names' language does not matter).
& icacls $keys /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' | Out-Null
if ($LASTEXITCODE -ne 0) { Fail "icacls $keys failed" }
Copy-Item -LiteralPath $CA -Destination (Join-Path $keys 'ca.crt') -Force
Copy-Item -LiteralPath $Cert -Destination (Join-Path $keys 'agent.crt') -Force
Copy-Item -LiteralPath $Key -Destination (Join-Path $keys 'agent.key') -Force
if ($Crl) { Copy-Item -LiteralPath $Crl -Destination (Join-Path $keys 'crl.pem') -Force }

if ($Config) {
    Copy-Item -LiteralPath $Config -Destination $ini -Force
} elseif ((Test-Path $ini) -and -not $Force) {
    Write-Host "keeping the existing $ini"
} else {
    $crlLine = if ($Crl) { 'crl = keys\crl.pem' } else { '' }
    @"
; exfleet agent configuration; every key: exfleet-agent --config-reference
[agent]
host_id = $HostId
[collector]
address = $Collector
name = $CollectorName
[tls]
ca = keys\ca.crt
cert = keys\agent.crt
key = keys\agent.key
$crlLine
[probe]
backend = win32
[spool]
dir = spool
"@ | Set-Content -LiteralPath $ini -Encoding ASCII
}

# "install" checks the configuration, certificate and key before registering.
& $exe install --config $ini
if ($LASTEXITCODE -ne 0) { Fail "the service was not installed (see the messages above)" }
Start-Service -Name exfleet
Get-Service -Name exfleet | Format-Table -AutoSize Name, Status, StartType
Write-Host "log: $(Join-Path $data 'logs\agent.log')"
