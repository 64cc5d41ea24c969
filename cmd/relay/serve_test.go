package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/control"
)

func TestServeExitCodes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "-bind", ln.Addr().String()}, &out, &errb); code != 1 {
		t.Fatalf("busy bind: exit %d, want 1 (%s)", code, errb.String())
	}
	if code := run([]string{"serve", "-h"}, &out, &errb); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	if code := run([]string{"serve", "extra"}, &out, &errb); code != 2 {
		t.Fatalf("extra arg: exit %d", code)
	}
	if code := run([]string{"serve", "-trusted-proxies", "10.0.0.0/99"}, &out, &errb); code != 2 {
		t.Fatalf("bad trusted proxies: exit %d", code)
	}
	if code := run([]string{"serve", "-nats-url", "nats://127.0.0.1:1", "-nats-user", "u", "-nats-token", "t"}, &out, &errb); code != 2 {
		t.Fatalf("two NATS credentials: exit %d", code)
	}
	if code := run([]string{"serve", "-replicas"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-nats-url") {
		t.Fatalf("-replicas without NATS: exit %d", code)
	}
	t.Setenv("OPENGENI_RELAY_RING_FRAMES", "lots")
	if code := run([]string{"serve"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "OPENGENI_RELAY_RING_FRAMES") {
		t.Fatalf("bad env: exit %d, %s", code, errb.String())
	}
}

func TestViewerConfigPrecedence(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	t.Setenv(control.EnvStreamSecret, "")
	t.Setenv(envRelayURL, "")
	if _, _, err := viewerConfig(t.TempDir(), "", ""); err == nil {
		t.Fatal("no secret anywhere: want an error")
	}
	t.Setenv(control.EnvStreamSecret, "from-env")
	url, secret, err := viewerConfig(t.TempDir(), "", "")
	if err != nil || string(secret) != "from-env" || url != "ws://127.0.0.1:8443/stream" {
		t.Fatalf("env: %q %q %v", url, secret, err)
	}
	f := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(f, []byte("from-file\n"), 0o600)
	url, secret, err = viewerConfig(t.TempDir(), "ws://relay:1/stream", f)
	if err != nil || string(secret) != "from-file" || url != "ws://relay:1/stream" {
		t.Fatalf("flags: %q %q %v", url, secret, err)
	}
}
