#!/bin/sh
# Removes what install.sh put on this machine: the background service and
# the opengeni-agent binary; with --purge (or OPENGENI_PURGE=1) also the
# config dir with the credentials.
#
# Usage: uninstall.sh [--purge] [-h|--help]
# Reads: OPENGENI_INSTALL_DIR (default ~/.local/bin), OPENGENI_CONFIG_DIR,
# XDG_CONFIG_HOME (the config dir is resolved like the agent does).
set -eu

PURGE="${OPENGENI_PURGE:-0}"
say() { printf '%s\n' "opengeni-agent uninstall: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--purge) PURGE=1 ;;
	-h | --help)
		sed -n '2,8p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//' || true
		exit 0
		;;
	*)
		say "error: unknown argument: $1"
		exit 2
		;;
	esac
	shift
done

INSTALL_DIR="${OPENGENI_INSTALL_DIR:-${HOME:?HOME is not set}/.local/bin}"
BIN="$INSTALL_DIR/opengeni-agent"

if [ -x "$BIN" ]; then
	if [ "$PURGE" = 1 ]; then
		"$BIN" uninstall --purge || say "warning: $BIN uninstall --purge failed; continuing"
	else
		"$BIN" uninstall || say "warning: $BIN uninstall failed; continuing"
	fi
else
	# No binary to ask: remove the per-user service definition directly.
	unit="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/opengeni-agent.service"
	if [ -f "$unit" ]; then
		systemctl --user disable --now opengeni-agent.service >/dev/null 2>&1 || true
		rm -f "$unit"
		systemctl --user daemon-reload >/dev/null 2>&1 || true
	fi
	plist="$HOME/Library/LaunchAgents/ai.opengeni.agent.plist"
	if [ -f "$plist" ]; then
		launchctl bootout "gui/$(id -u)/ai.opengeni.agent" >/dev/null 2>&1 || true
		rm -f "$plist"
	fi
fi

rm -f "$BIN" "$BIN.previous" "$BIN.new" "$BIN.updating"
say "removed $BIN"

if [ "$PURGE" = 1 ]; then
	if [ -n "${OPENGENI_CONFIG_DIR:-}" ]; then
		cfg=$OPENGENI_CONFIG_DIR
	elif [ -n "${XDG_CONFIG_HOME:-}" ]; then
		cfg="$XDG_CONFIG_HOME/opengeni/agent"
	else
		cfg="$HOME/.config/opengeni/agent"
	fi
	if [ -d "$cfg" ]; then
		rm -rf "$cfg"
		say "removed credentials and config at $cfg"
	fi
fi
say "done"
