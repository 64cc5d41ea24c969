package console

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/control"
)

// A browser terminal is a control.Terminal (a pty on the machine, viewed
// through the relay with an ogs_ viewer token minted here) whose output the
// console keeps in a window of absolute byte offsets. The browser reads it
// as server-sent events whose id is the offset after the event; a
// reconnecting EventSource sends Last-Event-ID and gets exactly the bytes
// after it, so a dropped connection or a reload loses no output (as long as
// it is within the window).

// termWindow is how much output a terminal keeps for reconnecting browsers.
const termWindow = 1 << 20

// termIdle closes a terminal no browser has watched for this long.
const termIdle = 10 * time.Minute

// sseChunk bounds one event's payload (before base64).
const sseChunk = 48 << 10

type terminal struct {
	id, machine string
	t           *control.Terminal

	watched

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	buf     []byte        // output [start, start+len(buf))
	start   int64
	ended   bool
	endMsg  string
}

// read returns the output from offset from (moved up to the window's start
// when older), the offset after it, whether the terminal ended with
// nothing left to read, and the channel that signals the next change.
func (t *terminal) read(from int64) (data []byte, next int64, ended bool, changed <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	end := t.start + int64(len(t.buf))
	from = min(max(from, t.start), end)
	data = t.buf[from-t.start : min(end-t.start, from-t.start+sseChunk)]
	next = from + int64(len(data))
	return data, next, t.ended && next == end, t.changed
}

func (t *terminal) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// pump moves the viewer's output into the window until the stream ends.
func (t *terminal) pump() {
	for b := range t.t.Output() {
		t.mu.Lock()
		t.buf = append(t.buf, b...)
		if over := len(t.buf) - termWindow; over > 0 {
			t.buf = append([]byte(nil), t.buf[over:]...)
			t.start += int64(over)
		}
		t.broadcastLocked()
		t.mu.Unlock()
	}
	msg := "the terminal ended"
	if err := t.t.Stream.Err(); err != nil {
		msg = err.Error()
	}
	t.mu.Lock()
	t.ended, t.endMsg = true, msg
	t.broadcastLocked()
	t.mu.Unlock()
}

type terminals struct {
	c  *Console
	mu sync.Mutex
	m  map[string]*terminal
}

func newTerminals(c *Console) *terminals {
	ts := &terminals{c: c, m: map[string]*terminal{}}
	go reapIdle(c.ctx, reapEvery, &ts.mu, ts.m, termIdle, (*terminal).idleFor, ts.close)
	return ts
}

func (ts *terminals) close(t *terminal) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := t.t.Close(ctx); err != nil {
		ts.c.log.Debug("console terminal close", "pty", t.t.PtyID, "err", err)
	}
}

func (ts *terminals) closeAll() {
	ts.mu.Lock()
	all := ts.m
	ts.m = map[string]*terminal{}
	ts.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range all {
		wg.Go(func() { ts.close(t) })
	}
	wg.Wait()
}

// get is the path's terminal of the path's machine.
func (ts *terminals) get(r *http.Request) (*terminal, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.m[r.PathValue("tid")]
	return t, ok && t.machine == r.PathValue("id")
}

type termSize struct {
	Cols uint32 `json:"cols"`
	Rows uint32 `json:"rows"`
}

func (s termSize) valid() bool { return s.Cols > 0 && s.Rows > 0 && s.Cols <= 1000 && s.Rows <= 1000 }

func (c *Console) handleTermOpen(w http.ResponseWriter, r *http.Request) {
	var size termSize
	if err := readJSON(r, &size); err != nil || !size.valid() {
		fail(w, http.StatusBadRequest, "need cols and rows (1..1000)")
		return
	}
	c.withSession(w, r, func(s *control.Session) error {
		t, err := s.OpenTerminal(r.Context(), control.TerminalOptions{PtyOptions: control.PtyOptions{Cols: size.Cols, Rows: size.Rows},
			StreamSecret: c.cfg.StreamSecret, Logger: c.log})
		if err != nil {
			return err
		}
		term := &terminal{id: randomToken(), machine: r.PathValue("id"), t: t, changed: make(chan struct{}), watched: watched{lastSeen: time.Now()}}
		go term.pump()
		c.terms.mu.Lock()
		c.terms.m[term.id] = term
		c.terms.mu.Unlock()
		writeJSON(w, http.StatusCreated, map[string]string{"id": term.id})
		return nil
	})
}

// handleTermOutput streams the output as server-sent events: "data" events
// (base64 bytes, id = the offset after them) and one "end" event.
func (c *Console) handleTermOutput(w http.ResponseWriter, r *http.Request) {
	t, ok := c.terms.get(r)
	if !ok {
		fail(w, http.StatusNotFound, "no such terminal")
		return
	}
	from, _ := strconv.ParseInt(r.Header.Get("Last-Event-ID"), 10, 64)
	if q := r.URL.Query().Get("from"); q != "" && r.Header.Get("Last-Event-ID") == "" {
		from, _ = strconv.ParseInt(q, 10, 64)
	}
	t.enter()
	defer t.leave()
	sse := startSSE(w)
	for {
		data, next, ended, changed := t.read(from)
		switch {
		case len(data) > 0:
			if sse.event("data", strconv.FormatInt(next, 10), base64.StdEncoding.EncodeToString(data)) != nil {
				return
			}
			from = next
			continue
		case ended:
			t.mu.Lock()
			msg := t.endMsg
			t.mu.Unlock()
			_ = sse.event("end", strconv.FormatInt(next, 10), msg)
			return
		}
		if !sse.wait(r.Context(), changed) {
			return
		}
	}
}

func (c *Console) handleTermInput(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Data string `json:"data"`
	}
	if err := readJSON(r, &body); err != nil {
		c.failOp(w, r, err)
		return
	}
	c.termOp(w, r, func(t *terminal) error { return t.t.Send(r.Context(), []byte(body.Data)) })
}

func (c *Console) handleTermResize(w http.ResponseWriter, r *http.Request) {
	var size termSize
	if err := readJSON(r, &size); err != nil || !size.valid() {
		fail(w, http.StatusBadRequest, "need cols and rows (1..1000)")
		return
	}
	c.termOp(w, r, func(t *terminal) error { return t.t.Resize(r.Context(), size.Cols, size.Rows) })
}

func (c *Console) handleTermClose(w http.ResponseWriter, r *http.Request) {
	c.termOp(w, r, func(t *terminal) error {
		c.terms.mu.Lock()
		delete(c.terms.m, t.id)
		c.terms.mu.Unlock()
		c.terms.close(t)
		return nil
	})
}

func (c *Console) termOp(w http.ResponseWriter, r *http.Request, f func(*terminal) error) {
	t, ok := c.terms.get(r)
	if !ok {
		fail(w, http.StatusNotFound, "no such terminal")
		return
	}
	if err := f(t); err != nil {
		c.failOp(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// sseWriter writes server-sent events.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// sseKeepAlive is the comment line that keeps idle streams open through
// proxies.
const sseKeepAlive = 15 * time.Second

func startSSE(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: http.NewResponseController(w)}
	_ = s.rc.Flush()
	return s
}

// event writes one event; data must not contain newlines.
func (s *sseWriter) event(name, id, data string) error {
	if id != "" {
		if _, err := fmt.Fprintf(s.w, "id: %s\n", id); err != nil {
			return err
		}
	}
	data = strings.NewReplacer("\r", " ", "\n", " ").Replace(data)
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", name, data); err != nil {
		return err
	}
	return s.rc.Flush()
}

// wait blocks until changed, keeping the stream alive; false when the
// browser left.
func (s *sseWriter) wait(ctx context.Context, changed <-chan struct{}) bool {
	keep := time.NewTimer(sseKeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-changed:
			return true
		case <-keep.C:
			if _, err := fmt.Fprint(s.w, ": keep-alive\n\n"); err != nil || s.rc.Flush() != nil {
				return false
			}
			keep.Reset(sseKeepAlive)
		}
	}
}
