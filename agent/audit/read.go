package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Filter selects records; the zero value selects all.
type Filter struct {
	Since      time.Time // records at or after
	Connection string    // a connection id (or prefix), workspace id or agent id
	Op         string    // an op name (exec, fs_write, ...) or event (pause, resume)
}

// Match reports whether r passes f.
func (f Filter) Match(r *Record) bool {
	if !f.Since.IsZero() && r.Time.Before(f.Since) {
		return false
	}
	// --op exec also finds what op-stream started as an exec (op_start,
	// op_end with Args.Starts "exec").
	if f.Op != "" && r.Op != f.Op && r.Event != f.Op && (r.Args == nil || r.Args.Starts != f.Op) {
		return false
	}
	if c := f.Connection; c != "" && !strings.HasPrefix(r.Connection, c) && r.Workspace != c && r.Agent != c {
		return false
	}
	return true
}

// Files are the log's files, oldest first (audit.N.jsonl … audit.1.jsonl,
// audit.jsonl).
func Files(dir string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "audit.*.jsonl"))
	if err != nil {
		return nil, err
	}
	type rotated struct {
		n    int
		path string
	}
	var rs []rotated
	for _, m := range matches {
		num := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "audit."), ".jsonl")
		if n, err := strconv.Atoi(num); err == nil && n > 0 {
			rs = append(rs, rotated{n, m})
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].n > rs[j].n })
	out := make([]string, 0, len(rs)+1)
	for _, r := range rs {
		out = append(out, r.path)
	}
	if _, err := os.Stat(LivePath(dir)); err == nil {
		out = append(out, LivePath(dir))
	}
	return out, nil
}

// ErrStop ends Read or Follow early without an error.
var ErrStop = errors.New("audit: stop")

// Read calls fn for every record passing f, oldest first, across the
// rotated files and the live one. A line that is not a record (torn by a
// crash) is skipped. A file rotated away between listing and opening is
// skipped too: its records moved to the next name, already read or next.
func Read(dir string, f Filter, fn func(Record) error) error {
	files, err := Files(dir)
	if err != nil {
		return err
	}
	for _, p := range files {
		fh, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		_, err = scan(fh, f, fn)
		fh.Close()
		if errors.Is(err, ErrStop) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// scan reads whole lines from r; it returns the bytes consumed (up to the
// last newline), so a follower can resume after a half-written line.
func scan(r io.Reader, f Filter, fn func(Record) error) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var consumed int64
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			consumed += int64(len(line))
			var rec Record
			if json.Unmarshal(bytes.TrimSpace(line), &rec) == nil && f.Match(&rec) {
				if err := fn(rec); err != nil {
					return consumed, err
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return consumed, nil
		}
		if err != nil {
			return consumed, err
		}
	}
}

// Follow is Read, then keeps reading records as the running agent appends
// them (following rotations) until ctx ends, polling every interval
// (default 200 ms).
func Follow(ctx context.Context, dir string, f Filter, interval time.Duration, fn func(Record) error) error {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	files, err := Files(dir)
	if err != nil {
		return err
	}
	// Everything but the live file is complete; the live one is tailed.
	for _, p := range files {
		if p == LivePath(dir) {
			break
		}
		if err := readFile(p, f, fn); err != nil {
			return stopOK(err)
		}
	}
	var (
		cur    *os.File
		offset int64
	)
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cur == nil {
			if fh, err := os.Open(LivePath(dir)); err == nil {
				cur, offset = fh, 0
			}
		}
		if cur != nil {
			n, err := readFrom(cur, offset, f, fn)
			offset += n
			if err != nil {
				return stopOK(err)
			}
			// Rotated: the open file is now audit.1.jsonl. It was read to its
			// end above only if the writer had finished it, so read once more,
			// then move to the new live file.
			if st, err := os.Stat(LivePath(dir)); err == nil {
				if cst, err2 := cur.Stat(); err2 == nil && !os.SameFile(st, cst) {
					n, err := readFrom(cur, offset, f, fn)
					offset += n
					if err != nil {
						return stopOK(err)
					}
					cur.Close()
					cur = nil
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func readFile(p string, f Filter, fn func(Record) error) error {
	fh, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer fh.Close()
	_, err = scan(fh, f, fn)
	return err
}

func readFrom(fh *os.File, offset int64, f Filter, fn func(Record) error) (int64, error) {
	if _, err := fh.Seek(offset, io.SeekStart); err != nil {
		return 0, err
	}
	return scan(fh, f, fn)
}

func stopOK(err error) error {
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

// Summary is a one-line description of a record's arguments for tables.
func (r *Record) Summary() string {
	switch r.Event {
	case "pause":
		if r.Until != nil {
			return "paused by the owner until " + r.Until.Local().Format(time.RFC3339)
		}
		return "paused by the owner until resumed"
	case "resume":
		return "resumed by the owner"
	case "audit":
		return r.Note
	}
	a := r.Args
	var parts []string
	add := func(s string) {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if a != nil {
		if a.GitOp != "" {
			add("git " + a.GitOp)
		}
		if len(a.Argv) > 0 {
			cmd := strings.Join(quoteAll(a.Argv), " ")
			if a.Shell {
				cmd = "sh -c " + cmd
			}
			add(cmd)
		}
		add(a.Path)
		if a.To != "" {
			add("→ " + a.To)
		}
		if a.Cwd != "" {
			add("in " + a.Cwd)
		}
		if a.PtyID != "" {
			add("pty " + a.PtyID)
		}
		if a.Cols > 0 || a.Rows > 0 {
			add(fmt.Sprintf("%dx%d", a.Cols, a.Rows))
		}
		if a.Width > 0 || a.Height > 0 {
			add(fmt.Sprintf("%dx%d", a.Width, a.Height))
		}
		if in := a.Input; in != nil {
			s := in.Kind
			if in.Action != "" {
				s += " " + in.Action
			}
			if in.Key != "" {
				s += " " + in.Key
			}
			if in.Chars > 0 {
				s += fmt.Sprintf(" (%d chars)", in.Chars)
			}
			add(s)
		}
		if a.Bytes > 0 {
			add(fmt.Sprintf("%d bytes", a.Bytes))
		}
		if len(a.EnvKeys) > 0 {
			add("env " + strings.Join(a.EnvKeys, ","))
		}
		if a.StdinBytes > 0 {
			add(fmt.Sprintf("stdin %d bytes", a.StdinBytes))
		}
		if a.ExitCode != nil {
			add(fmt.Sprintf("exit %d", *a.ExitCode))
		}
		add(a.TargetVersion)
		if a.Text != "" {
			add("text " + strconv.Quote(a.Text))
		}
	}
	if r.Message != "" {
		add("— " + r.Message)
	}
	return strings.Join(parts, " ")
}

func quoteAll(argv []string) []string {
	out := make([]string, len(argv))
	for i, s := range argv {
		if s == "" || strings.ContainsAny(s, " \t\n\"'\\$`") {
			s = strconv.Quote(s)
		}
		out[i] = s
	}
	return out
}
