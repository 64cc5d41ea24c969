package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// relay serve --metrics-listen serves /metrics and /healthz (and nothing
// else) on an address of its own; --log-format json logs one JSON object
// per line.
func TestServeMetricsListenAndJSONLogs(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses SIGTERM")
	}
	bin := builtRelay(t)
	cmd := exec.Command(bin, "serve", "--bind", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-format", "json",
		"--stream-token-secret", "0123456789abcdef0123456789abcdef")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	// The log says where the metrics listener is.
	var metricsAddr string
	lines := bufio.NewScanner(stderr)
	for metricsAddr == "" && lines.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(lines.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", lines.Text())
		}
		if rec["msg"] == "relay metrics listening" {
			metricsAddr, _ = rec["addr"].(string)
		}
	}
	if metricsAddr == "" {
		t.Fatalf("no metrics listener logged (%v)", lines.Err())
	}
	go io.Copy(io.Discard, stderr)
	get := func(path string) (int, string) {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "relay_") {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, _ := get("/stream"); code != 404 {
		t.Fatalf("/stream on the metrics address: %d, want 404", code)
	}
}

func TestLogFormatRejectsUnknown(t *testing.T) {
	var out, errb strings.Builder
	if code := run([]string{"serve", "--log-format", "xml", "--stream-token-secret", "x"}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), `unknown log format "xml"`) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
