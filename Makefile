# Release artifacts: cross-built, signed, with the channel manifest.
#   make release VERSION=1.2.3 KEY=path/to/minisign.key [OUT=dist] [CHANNEL=stable]
# An encrypted key reads its password from $MINISIGN_PASSWORD.
VERSION ?=
KEY ?=
OUT ?= dist
CHANNEL ?= stable

.PHONY: release
release:
	@test -n "$(VERSION)" || { echo "make release: set VERSION=x.y.z"; exit 2; }
	@test -n "$(KEY)" || { echo "make release: set KEY=<minisign secret key file>"; exit 2; }
	@echo "release: compiling the release tool"
	go run ./internal/cmd/release -out "$(OUT)" -version "$(VERSION)" -key "$(KEY)" -channel "$(CHANNEL)"
