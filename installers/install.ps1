# OpenGeni agent installer for Windows. Read it before you run it:
#   powershell -ExecutionPolicy Bypass -c "$env:OPENGENI_ENROLL_TOKEN='<token>'; irm https://get.opengeni.ai/install.ps1 | iex"
# Steps (stopping with a message and a non-zero exit at the first failure;
# nothing is installed until every check passed): pick the artifact for this
# CPU, download it with its .sha256 and .minisig into a temp dir (removed
# whatever happens), check the sha256, then the minisign signature against
# the key pinned below (minisign.exe, else OpenSSL >= 3.0), move it into
# %LOCALAPPDATA%\OpenGeni\bin (the previous exe kept as .previous), add that
# dir to the user PATH, and with a token enroll and install + start the
# per-user service (a logon task; OPENGENI_INSTALL_NO_SERVICE=1 skips it).
# Env: OPENGENI_INSTALL_BASE_URL, OPENGENI_AGENT_VERSION (default latest),
# OPENGENI_INSTALL_DIR, OPENGENI_ENROLL_TOKEN, OPENGENI_API_URL,
# OPENGENI_INSTALL_NO_SERVICE; tests only: OPENGENI_INSTALL_ARCH_OVERRIDE.
# Exit codes: 2 install failure, 3 download, 4 checksum, 5 signature,
# 6 no verification tool, 7 unsupported architecture.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3

# The release signing key; rewritten by internal/cmd/release at release time.
$PinnedPubKey = 'RWSaqgF1EVFuci7hXvDJO7cBh2xf2k0XKhCpvl23aWKG+nMAGfZ6D2Pn'

function Fail([int]$Code, [string]$Msg) {
    [Console]::Error.WriteLine("opengeni-agent install: error: $Msg")
    exit $Code
}
function Say([string]$Msg) { [Console]::Error.WriteLine("opengeni-agent install: $Msg") }

$base = if ($env:OPENGENI_INSTALL_BASE_URL) { $env:OPENGENI_INSTALL_BASE_URL.TrimEnd('/') } else { 'https://get.opengeni.ai' }
$version = if ($env:OPENGENI_AGENT_VERSION) { $env:OPENGENI_AGENT_VERSION } else { 'latest' }
$arch = if ($env:OPENGENI_INSTALL_ARCH_OVERRIDE) { $env:OPENGENI_INSTALL_ARCH_OVERRIDE }
        elseif ($env:PROCESSOR_ARCHITEW6432) { $env:PROCESSOR_ARCHITEW6432 } else { $env:PROCESSOR_ARCHITECTURE }
switch ($arch) {
    'AMD64' { $target = 'x86_64-pc-windows-msvc' }
    'ARM64' { $target = 'aarch64-pc-windows-msvc' }
    default { Fail 7 "unsupported architecture: $arch (supported: AMD64, ARM64)" }
}
$asset = "opengeni-agent-$target.exe"
$dir = if ($version -eq 'latest') { 'latest' } elseif ($version.StartsWith('v')) { $version } else { "v$version" }
$url = "$base/agent/$dir/$asset"
$installDir = if ($env:OPENGENI_INSTALL_DIR) { $env:OPENGENI_INSTALL_DIR } else { Join-Path $env:LOCALAPPDATA 'OpenGeni\bin' }

$tmp = Join-Path ([IO.Path]::GetTempPath()) ("opengeni-" + [Guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $tmp | Out-Null
try {
    $file = Join-Path $tmp $asset
    Say "downloading $url"
    $ProgressPreference = 'Continue'
    foreach ($pair in @(@($url, $file), @("$url.sha256", "$file.sha256"), @("$url.minisig", "$file.minisig"))) {
        try { Invoke-WebRequest -UseBasicParsing -Uri $pair[0] -OutFile $pair[1] }
        catch { Fail 3 "download failed: $($pair[0]): $($_.Exception.Message)" }
    }

    $want = ((Get-Content -Raw "$file.sha256").Trim() -split '\s+')[0].ToLowerInvariant()
    $got = (Get-FileHash -Algorithm SHA256 $file).Hash.ToLowerInvariant()
    if ($want -ne $got) { Fail 4 "checksum mismatch for ${asset}: expected $want, got $got" }

    $minisign = Get-Command minisign.exe -ErrorAction SilentlyContinue
    $openssl = Get-Command openssl.exe -ErrorAction SilentlyContinue
    if ($minisign) {
        & $minisign.Source -V -q -m $file -x "$file.minisig" -P $PinnedPubKey *> $null
        if ($LASTEXITCODE -ne 0) { Fail 5 "signature check failed for ${asset}: not signed by the OpenGeni release key" }
    } elseif ($openssl) {
        # minisign "ED": Ed25519 over BLAKE2b-512(file); global sig over sig || trusted comment.
        $pub = [Convert]::FromBase64String($PinnedPubKey)
        $lines = Get-Content "$file.minisig"
        $sig = [Convert]::FromBase64String($lines[1].Trim())
        $comment = $lines[2] -replace '^trusted comment: ', ''
        $gsig = [Convert]::FromBase64String($lines[3].Trim())
        if ($pub.Length -ne 42 -or $sig.Length -ne 74 -or $gsig.Length -ne 64 -or $sig[0] -ne 0x45 -or $sig[1] -ne 0x44) {
            Fail 5 "signature check failed for ${asset}: malformed or non-prehashed signature"
        }
        for ($i = 2; $i -lt 10; $i++) { if ($sig[$i] -ne $pub[$i]) { Fail 5 "signature check failed for ${asset}: signed by another key" } }
        $der = [byte[]](0x30,0x2a,0x30,0x05,0x06,0x03,0x2b,0x65,0x70,0x03,0x21,0x00) + $pub[10..41]
        [IO.File]::WriteAllBytes("$tmp\pub.der", $der)
        [IO.File]::WriteAllBytes("$tmp\ed", $sig[10..73])
        [IO.File]::WriteAllBytes("$tmp\gsig", $gsig)
        & $openssl.Source dgst -blake2b512 -binary -out "$tmp\digest" $file
        if ($LASTEXITCODE -ne 0) { Fail 6 "openssl cannot compute BLAKE2b-512 (need OpenSSL >= 3.0)" }
        & $openssl.Source pkeyutl -verify -pubin -keyform DER -inkey "$tmp\pub.der" -rawin -in "$tmp\digest" -sigfile "$tmp\ed" *> $null
        if ($LASTEXITCODE -ne 0) { Fail 5 "signature check failed for ${asset}: not signed by the OpenGeni release key" }
        [IO.File]::WriteAllBytes("$tmp\global", [byte[]]$sig[10..73] + [Text.Encoding]::UTF8.GetBytes($comment))
        & $openssl.Source pkeyutl -verify -pubin -keyform DER -inkey "$tmp\pub.der" -rawin -in "$tmp\global" -sigfile "$tmp\gsig" *> $null
        if ($LASTEXITCODE -ne 0) { Fail 5 "signature check failed for ${asset}: trusted comment does not verify" }
    } else {
        Fail 6 "no signature tool: install minisign (winget install jedisct1.minisign) or OpenSSL >= 3.0"
    }
    Say "checksum and signature verified"

    New-Item -ItemType Directory -Force -Path $installDir | Out-Null
    $bin = Join-Path $installDir 'opengeni-agent.exe'
    $staged = Join-Path $installDir ".opengeni-agent.new.exe"
    Copy-Item $file $staged -Force
    & $staged version *> $null
    if ($LASTEXITCODE -ne 0) { Remove-Item -Force $staged; Fail 2 "the downloaded binary does not run on this machine" }
    if (Test-Path $bin) {
        # a running exe can be renamed, not overwritten
        Remove-Item -Force "$bin.previous" -ErrorAction SilentlyContinue
        Rename-Item $bin "opengeni-agent.exe.previous"
    }
    try { Rename-Item $staged 'opengeni-agent.exe' }
    catch {
        if (Test-Path "$bin.previous") { Rename-Item "$bin.previous" 'opengeni-agent.exe' }
        Remove-Item -Force $staged -ErrorAction SilentlyContinue
        Fail 2 "cannot move the binary into ${bin}: $($_.Exception.Message)"
    }
    Say "installed at $bin"
} finally {
    Remove-Item -Recurse -Force $tmp -ErrorAction SilentlyContinue
}

$userPath = [Environment]::GetEnvironmentVariable('Path', 'User')
if (-not ($userPath -split ';' | Where-Object { $_ -eq $installDir })) {
    [Environment]::SetEnvironmentVariable('Path', ($userPath.TrimEnd(';') + ";$installDir"), 'User')
    Say "added $installDir to your PATH (new terminals)"
}

if ($env:OPENGENI_ENROLL_TOKEN) {
    $enrollArgs = @('enroll', '--token', $env:OPENGENI_ENROLL_TOKEN, '--non-interactive')
    if ($env:OPENGENI_API_URL) { $enrollArgs = @('--api-url', $env:OPENGENI_API_URL) + $enrollArgs }
    & $bin @enrollArgs
    if ($LASTEXITCODE -ne 0) { Fail 2 "enrollment failed (the binary stays installed; retry with: $bin enroll)" }
    if ($env:OPENGENI_INSTALL_NO_SERVICE -ne '1') {
        & $bin service install
        # 3: the service manager is unavailable; the install and enrollment still stand
        if ($LASTEXITCODE -eq 3) { Say "installed and enrolled; no background service (the reason is above). Start the agent with: $bin run" }
        elseif ($LASTEXITCODE -ne 0) { Fail 2 "could not install the background service (retry with: $bin service install)" }
    }
} else {
    Say "next: $bin enroll   (then: $bin service install, or $bin run)"
}
exit 0
