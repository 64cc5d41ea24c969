#!/bin/sh
# OpenGeni agent installer for Linux and macOS. Read it before you run it:
#
#   curl -fsSL https://get.opengeni.ai/install.sh | sh -s -- --token <enroll token>
#
# What it does, in order, stopping with a message and a non-zero exit at the
# first failure (nothing is installed until every check passed):
#   1. detects the OS and CPU (uname) and picks the release artifact;
#   2. downloads the artifact, its .sha256 and its .minisig into a temp dir
#      (removed on exit, whatever happens);
#   3. checks the sha256, then the minisign signature against the public key
#      pinned below (with `minisign`, or OpenSSL >= 3.0 when minisign is
#      missing);
#   4. moves the binary into ~/.local/bin (atomically, by rename);
#   5. with --token: enrolls this machine and installs + starts the per-user
#      background service (`opengeni-agent service install`).
#
# Options: --token TOKEN (or $OPENGENI_ENROLL_TOKEN), --version V (or
# $OPENGENI_AGENT_VERSION, default latest), --dir DIR (or
# $OPENGENI_INSTALL_DIR), --no-service (or OPENGENI_INSTALL_NO_SERVICE=1),
# -h/--help. Also read: OPENGENI_INSTALL_BASE_URL (release origin),
# OPENGENI_API_URL, OPENGENI_WORKSPACE_ID (passed to enroll).
# For tests only: OPENGENI_INSTALL_OS_OVERRIDE / OPENGENI_INSTALL_ARCH_OVERRIDE
# replace the output of `uname -s` / `uname -m` (the artifact they select
# must still carry a valid signature).
#
# Exit codes: 0 ok (also when --token enrolled this machine but the service
# manager is unavailable, e.g. no user bus: it says so and how to run the
# agent), 2 usage or install failure, 3 download failed,
# 4 checksum mismatch, 5 signature check failed, 6 no sha256/signature tool,
# 7 unsupported OS or architecture.
set -eu

# The release signing key. The release tool (internal/cmd/release) rewrites
# this line with the key that signed the artifacts published beside this
# script; there is deliberately no way to replace it at run time.
OPENGENI_PINNED_PUBKEY='RWSaqgF1EVFuci7hXvDJO7cBh2xf2k0XKhCpvl23aWKG+nMAGfZ6D2Pn'

BASE_URL="${OPENGENI_INSTALL_BASE_URL:-https://get.opengeni.ai}"
VERSION="${OPENGENI_AGENT_VERSION:-latest}"
TOKEN="${OPENGENI_ENROLL_TOKEN:-}"
INSTALL_DIR="${OPENGENI_INSTALL_DIR:-}"
NO_SERVICE="${OPENGENI_INSTALL_NO_SERVICE:-0}"

TMP_DIR=""
STAGED=""

say() { printf '%s\n' "opengeni-agent install: $*" >&2; }
die() {
	code=$1
	shift
	say "error: $*"
	exit "$code"
}

cleanup() {
	if [ -n "$STAGED" ]; then rm -f "$STAGED"; fi
	if [ -n "$TMP_DIR" ]; then rm -rf "$TMP_DIR"; fi
}

usage() {
	sed -n '2,31p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//' || true
}

parse_args() {
	while [ $# -gt 0 ]; do
		case "$1" in
		--token)
			[ $# -ge 2 ] || die 2 "--token needs a value"
			TOKEN=$2
			shift 2
			;;
		--token=*)
			TOKEN=${1#--token=}
			shift
			;;
		--version)
			[ $# -ge 2 ] || die 2 "--version needs a value"
			VERSION=$2
			shift 2
			;;
		--dir)
			[ $# -ge 2 ] || die 2 "--dir needs a value"
			INSTALL_DIR=$2
			shift 2
			;;
		--no-service)
			NO_SERVICE=1
			shift
			;;
		-h | --help)
			usage
			exit 0
			;;
		*) die 2 "unknown argument: $1 (see --help)" ;;
		esac
	done
}

detect_target() {
	os=${OPENGENI_INSTALL_OS_OVERRIDE:-$(uname -s)}
	arch=${OPENGENI_INSTALL_ARCH_OVERRIDE:-$(uname -m)}
	case "$arch" in
	x86_64 | amd64) arch=x86_64 ;;
	aarch64 | arm64) arch=aarch64 ;;
	*) die 7 "unsupported architecture: $arch (supported: x86_64, aarch64)" ;;
	esac
	case "$os" in
	Linux) TARGET="$arch-unknown-linux-musl" ;;
	Darwin) TARGET="$arch-apple-darwin" ;;
	*) die 7 "unsupported OS: $os (this script is for Linux and macOS; use install.ps1 on Windows)" ;;
	esac
	ASSET="opengeni-agent-$TARGET"
}

# download URL FILE [progress]: fetch with curl (else wget), failing on any
# HTTP error; shows a progress bar for the artifact when stderr is a terminal.
download() {
	dl_url=$1
	dl_out=$2
	dl_bar=${3:-}
	if command -v curl >/dev/null 2>&1; then
		if [ -n "$dl_bar" ] && [ -t 2 ]; then
			curl -fL --proto '=https,http,file' --progress-bar -o "$dl_out" "$dl_url" || return 1
		else
			curl -fsSL --proto '=https,http,file' -o "$dl_out" "$dl_url" || return 1
		fi
	elif command -v wget >/dev/null 2>&1; then
		if [ -n "$dl_bar" ] && [ -t 2 ]; then
			wget -q --show-progress -O "$dl_out" "$dl_url" || return 1
		else
			wget -q -O "$dl_out" "$dl_url" || return 1
		fi
	else
		die 3 "neither curl nor wget is installed"
	fi
}

sha256_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d ' ' -f 1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d ' ' -f 1
	elif command -v openssl >/dev/null 2>&1; then
		openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1
	else
		die 6 "no sha256 tool found (install coreutils, perl-Digest-SHA or openssl)"
	fi
}

verify_checksum() {
	want=$(cut -d ' ' -f 1 <"$TMP_DIR/$ASSET.sha256" | tr 'A-F' 'a-f')
	got=$(sha256_of "$TMP_DIR/$ASSET")
	case "$want" in
	[0-9a-f]*) ;;
	*) die 4 "the checksum file $ASSET.sha256 is malformed" ;;
	esac
	[ "$want" = "$got" ] || die 4 "checksum mismatch for $ASSET: expected $want, got $got"
}

# b64d decodes base64 from stdin.
b64d() { openssl base64 -d -A; }

# hexof FILE SKIP COUNT prints COUNT bytes of FILE from SKIP as hex.
hexof() { dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null | od -An -v -tx1 | tr -d ' \n'; }

# verify_openssl FILE SIG: minisign verification with OpenSSL >= 3.0: the
# key id must match, the Ed25519 signature must verify over BLAKE2b-512 of
# the file (prehashed "ED" signatures only), and the global signature must
# verify over signature || trusted comment.
verify_openssl() {
	file=$1
	sig=$2
	w="$TMP_DIR/v"
	mkdir -p "$w"
	printf '%s' "$OPENGENI_PINNED_PUBKEY" | b64d >"$w/pub" 2>/dev/null || return 1
	sed -n 2p "$sig" | tr -d '\r' | b64d >"$w/sig" 2>/dev/null || return 1
	sed -n 4p "$sig" | tr -d '\r' | b64d >"$w/gsig" 2>/dev/null || return 1
	comment=$(sed -n 3p "$sig" | tr -d '\r')
	case "$comment" in
	"trusted comment: "*) comment=${comment#trusted comment: } ;;
	*) return 1 ;;
	esac
	[ "$(wc -c <"$w/pub" | tr -d ' ')" = 42 ] || return 1
	[ "$(wc -c <"$w/sig" | tr -d ' ')" = 74 ] || return 1
	[ "$(wc -c <"$w/gsig" | tr -d ' ')" = 64 ] || return 1
	[ "$(hexof "$w/sig" 0 2)" = 4544 ] || { say "only prehashed (ED) minisign signatures are accepted"; return 1; }
	[ "$(hexof "$w/sig" 2 8)" = "$(hexof "$w/pub" 2 8)" ] || { say "signed by another key than the pinned one"; return 1; }
	# DER SubjectPublicKeyInfo for Ed25519 = 302a300506032b6570032100 || key
	printf '\060\052\060\005\006\003\053\145\160\003\041\000' >"$w/pub.der"
	dd if="$w/pub" bs=1 skip=10 count=32 2>/dev/null >>"$w/pub.der"
	dd if="$w/sig" bs=1 skip=10 count=64 2>/dev/null >"$w/ed"
	openssl dgst -blake2b512 -binary "$file" >"$w/digest" || return 1
	openssl pkeyutl -verify -pubin -keyform DER -inkey "$w/pub.der" -rawin \
		-in "$w/digest" -sigfile "$w/ed" >/dev/null 2>&1 || return 1
	cp "$w/ed" "$w/global"
	printf '%s' "$comment" >>"$w/global"
	openssl pkeyutl -verify -pubin -keyform DER -inkey "$w/pub.der" -rawin \
		-in "$w/global" -sigfile "$w/gsig" >/dev/null 2>&1 || return 1
}

openssl_can_verify() {
	command -v openssl >/dev/null 2>&1 || return 1
	openssl dgst -blake2b512 -binary /dev/null >/dev/null 2>&1 || return 1
	openssl pkeyutl -help 2>&1 | grep -q -- '-rawin'
}

verify_signature() {
	f="$TMP_DIR/$ASSET"
	s="$TMP_DIR/$ASSET.minisig"
	if command -v minisign >/dev/null 2>&1; then
		minisign -V -q -m "$f" -x "$s" -P "$OPENGENI_PINNED_PUBKEY" >/dev/null 2>&1 ||
			die 5 "signature check failed for $ASSET: it was not signed by the OpenGeni release key (minisign)"
	elif openssl_can_verify; then
		verify_openssl "$f" "$s" ||
			die 5 "signature check failed for $ASSET: it was not signed by the OpenGeni release key (openssl)"
	else
		die 6 "no signature tool: install minisign (https://jedisct1.github.io/minisign/) or OpenSSL >= 3.0"
	fi
}

install_binary() {
	if [ -z "$INSTALL_DIR" ]; then
		[ -n "${HOME:-}" ] || die 2 "\$HOME is not set; pass --dir"
		INSTALL_DIR="$HOME/.local/bin"
	fi
	mkdir -p "$INSTALL_DIR" || die 2 "cannot create $INSTALL_DIR"
	BIN="$INSTALL_DIR/opengeni-agent"
	STAGED="$INSTALL_DIR/.opengeni-agent.new.$$"
	cp "$TMP_DIR/$ASSET" "$STAGED" || die 2 "cannot write into $INSTALL_DIR"
	chmod 0755 "$STAGED" || die 2 "cannot make $STAGED executable"
	"$STAGED" version >/dev/null 2>&1 || die 2 "the downloaded binary does not run on this machine"
	mv -f "$STAGED" "$BIN" || die 2 "cannot move the binary into $BIN"
	STAGED=""
	say "installed $("$BIN" version 2>/dev/null || echo opengeni-agent) at $BIN"
}

finish() {
	if [ -n "$TOKEN" ]; then
		set -- enroll --token "$TOKEN" --non-interactive
		if [ -n "${OPENGENI_API_URL:-}" ]; then
			set -- --api-url "$OPENGENI_API_URL" "$@"
		fi
		"$BIN" "$@" || die 2 "enrollment failed (the binary stays installed at $BIN; retry with: $BIN enroll)"
		if [ "$NO_SERVICE" != 1 ]; then
			# 3: the service manager cannot be reached from here (no user
			# bus, no systemd); the install and enrollment still stand.
			rc=0
			"$BIN" service install || rc=$?
			case $rc in
			0) ;;
			3) say "installed and enrolled; no background service (the reason is above). Start the agent with: $BIN run" ;;
			*) die 2 "could not install the background service (retry with: $BIN service install)" ;;
			esac
		fi
	else
		say "next: $BIN enroll   (then: $BIN service install, or $BIN run in the foreground)"
	fi
	case ":${PATH:-}:" in
	*":$INSTALL_DIR:"*) ;;
	*) say "note: $INSTALL_DIR is not on your PATH; add it to use \`opengeni-agent\` directly" ;;
	esac
}

main() {
	parse_args "$@"
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	detect_target
	TMP_DIR=$(mktemp -d 2>/dev/null || mktemp -d -t opengeni) || die 2 "cannot create a temp dir"
	case "$VERSION" in
	latest) dir="latest" ;;
	v*) dir="$VERSION" ;;
	*) dir="v$VERSION" ;;
	esac
	url="${BASE_URL%/}/agent/$dir/$ASSET"
	say "downloading $url"
	download "$url" "$TMP_DIR/$ASSET" bar || die 3 "download failed: $url"
	download "$url.sha256" "$TMP_DIR/$ASSET.sha256" || die 3 "download failed: $url.sha256"
	download "$url.minisig" "$TMP_DIR/$ASSET.minisig" || die 3 "download failed: $url.minisig"
	verify_checksum
	verify_signature
	say "checksum and signature verified"
	install_binary
	finish
}

if [ "${OPENGENI_INSTALL_LIB:-0}" != 1 ]; then
	main "$@"
fi
