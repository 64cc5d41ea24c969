package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opengeni/opengeni-agent/control"
)

// largeTally counts what the large scenario saw.
type largeTally struct {
	wallHits      int      // typed PAYLOAD_TOO_LARGE answers
	wallViolation []string // anything else where the wall should have answered
	corrupt       []string // answered with content that is not the data
	chunkedBad    []string // chunked transfers that failed or differ
	execBad       []string // exec output neither intact nor marked truncated
	execs         int
}

func runLarge(ctx context.Context, e *Env, r *ScenarioResult) error {
	a, err := e.StartAgent(ctx, "large")
	if err != nil {
		return err
	}
	rec := &Recorder{}
	d := e.Driver(a, rec, e.p.opTimeout)
	d.Ping(ctx, "ping") // the first op dials; keep it out of the large ops
	idle, err := ReadMem(a.Pid())
	if err != nil {
		return err
	}
	r.Metrics["max_payload_bytes"] = float64(d.Session.MaxPayload(ctx))
	var lt largeTally
	for _, size := range e.p.largeSizes {
		if err := largeRound(ctx, d, a.Root, size, &lt); err != nil {
			return err
		}
	}
	time.Sleep(time.Second) // idle again
	after, err := ReadMem(a.Pid())
	if err != nil {
		return err
	}
	r.Metrics["rss_idle_before_kib"] = idle.RSSKiB
	r.Metrics["rss_idle_after_kib"] = after.RSSKiB
	r.Metrics["rss_peak_kib"] = after.PeakKiB
	r.Metrics["payload_wall_hits"] = float64(lt.wallHits)
	r.Latency = rec.Rows()
	r.Verdicts = append(r.Verdicts,
		Check("payload wall answers other than PAYLOAD_TOO_LARGE (timeouts, other errors)", float64(len(lt.wallViolation)), AtMost, 0, "ops").
			With("%s", strings.Join(lt.wallViolation, "; ")),
		Check("payload wall reached (single-message ops over the max payload)", float64(lt.wallHits), AtLeast, 1, "ops"),
		Check("single-message answers with wrong content", float64(len(lt.corrupt)), AtMost, 0, "ops").
			With("%s", strings.Join(lt.corrupt, "; ")),
		Check("chunked transfers (ReadFileAll/WriteFileAll) not intact", float64(len(lt.chunkedBad)), AtMost, 0, "transfers").
			With("%s", strings.Join(lt.chunkedBad, "; ")),
		Check("exec output neither intact nor marked truncated", float64(len(lt.execBad)), AtMost, 0, "execs").
			With("%d execs; %s", lt.execs, strings.Join(lt.execBad, "; ")),
	)
	return nil
}

// largeRound moves one size every way: exec output, single-message read
// and write, chunked read and write.
func largeRound(ctx context.Context, d *Driver, root string, size int, lt *largeTally) error {
	name := sizeName(size)
	data := make([]byte, size)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	src := "big-" + name + ".bin"
	if err := os.WriteFile(filepath.Join(root, src), data, 0o644); err != nil {
		return err
	}
	wall := func(op string, o Outcome) bool {
		if o.Class == ClassTyped && o.Code == "PAYLOAD_TOO_LARGE" {
			lt.wallHits++
			return true
		}
		if o.Class != ClassOK {
			lt.wallViolation = append(lt.wallViolation, fmt.Sprintf("%s %s: %s %s %s", op, name, o.Class, o.Code, o.Detail))
			return true
		}
		return false
	}

	// exec: cat prints the file; the reply holds it all, or a prefix plus a
	// truncation marker naming the real size.
	start := time.Now()
	res, err := d.Session.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"cat " + src}, Shell: true})
	o := d.record("exec_cat_"+name, start, err, false, "")
	lt.execs++
	if !wall("exec", o) {
		out := res.GetStdout()
		marker := fmt.Sprintf("stdout truncated: kept %d of %d bytes", len(out), size)
		switch {
		case res.GetExitCode() != 0:
			lt.execBad = append(lt.execBad, fmt.Sprintf("exec %s: exit %d", name, res.GetExitCode()))
		case bytes.Equal(out, data):
		case bytes.HasPrefix(data, out) && strings.Contains(string(res.GetStderr()), marker):
		default:
			lt.execBad = append(lt.execBad, fmt.Sprintf("exec %s: %d stdout bytes, prefix=%v, stderr %q", name, len(out), bytes.HasPrefix(data, out), clip(res.GetStderr())))
		}
	}

	// Single-message read.
	start = time.Now()
	got, err := d.Session.ReadFile(ctx, "/workspace/"+src, 0)
	o = d.record("fs_read_single_"+name, start, err, false, "")
	if !wall("read", o) && !bytes.Equal(got, data) {
		lt.corrupt = append(lt.corrupt, fmt.Sprintf("read %s: got %d bytes", name, len(got)))
	}

	// Single-message write.
	dst := "single-" + name + ".bin"
	start = time.Now()
	_, err = d.Session.WriteFile(ctx, "/workspace/"+dst, data, nil)
	o = d.record("fs_write_single_"+name, start, err, false, "")
	if !wall("write", o) {
		if b, err := os.ReadFile(filepath.Join(root, dst)); err != nil || sha256.Sum256(b) != sum {
			lt.corrupt = append(lt.corrupt, fmt.Sprintf("write %s: file on disk differs (%v)", name, err))
		}
	}

	// Chunked read.
	h := sha256.New()
	start = time.Now()
	n, err := d.Session.ReadFileAll(ctx, "/workspace/"+src, h, nil)
	d.record("read_all_"+name, start, err, false, "")
	if err != nil || n != int64(size) || !bytes.Equal(h.Sum(nil), sum[:]) {
		lt.chunkedBad = append(lt.chunkedBad, fmt.Sprintf("ReadFileAll %s: %d bytes, err %v", name, n, err))
	}

	// Chunked write.
	dst = "chunked-" + name + ".bin"
	start = time.Now()
	n, err = d.Session.WriteFileAll(ctx, "/workspace/"+dst, bytes.NewReader(data), int64(size), nil)
	d.record("write_all_"+name, start, err, false, "")
	b, rerr := os.ReadFile(filepath.Join(root, dst))
	if err != nil || n != int64(size) || rerr != nil || sha256.Sum256(b) != sum {
		lt.chunkedBad = append(lt.chunkedBad, fmt.Sprintf("WriteFileAll %s: %d bytes, err %v", name, n, errors.Join(err, rerr)))
	}
	for _, f := range []string{src, "single-" + name + ".bin", dst} {
		_ = os.Remove(filepath.Join(root, f))
	}
	return nil
}
