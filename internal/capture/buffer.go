// Package capture collects a child process's stdout and stderr for a reply:
// each stream keeps its head up to a byte limit and counts the rest, reading
// goes on until every byte the command wrote is in (Pipes), and Fit shares
// the reply budget between the two streams, marking every cut on stderr in
// one format. exec and git both answer with it.
package capture

import (
	"fmt"
	"io"
)

// Buffer keeps the head of a stream, at most limit bytes, and counts the
// rest. It never fails a write: the child must keep running even when its
// output no longer fits.
type Buffer struct {
	limit int
	buf   []byte
	total int64
	// cut is set when reading stopped before the end of the stream (a
	// background process held it open); Fit reports it.
	cut bool
}

// NewBuffer returns a Buffer keeping at most limit bytes.
func NewBuffer(limit int) *Buffer { return &Buffer{limit: max(limit, 0)} }

// Bytes is the kept head; nil when nothing was kept.
func (b *Buffer) Bytes() []byte {
	if len(b.buf) == 0 {
		return nil
	}
	return b.buf
}

// Total is how many bytes the stream carried, kept or not.
func (b *Buffer) Total() int64 { return b.total }

// Cut reports whether reading stopped before the stream ended.
func (b *Buffer) Cut() bool { return b.cut }

// complete reports whether every byte of the whole stream is kept.
func (b *Buffer) complete() bool { return !b.cut && int64(len(b.buf)) == b.total }

func (b *Buffer) Write(p []byte) (int, error) {
	b.total += int64(len(p))
	for rest := p; len(rest) > 0; {
		dst := b.spare()
		if dst == nil {
			break
		}
		n := copy(dst, rest)
		b.buf = b.buf[:len(b.buf)+n]
		rest = rest[n:]
	}
	return len(p), nil
}

// ReadFrom reads r to its end straight into the kept head (saving a copy
// buffer per stream) and counts the rest.
func (b *Buffer) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var scratch []byte
	for {
		dst := b.spare()
		kept := dst != nil
		if !kept {
			if scratch == nil {
				scratch = make([]byte, 32<<10)
			}
			dst = scratch
		}
		m, err := r.Read(dst)
		n += int64(m)
		b.total += int64(m)
		if kept {
			b.buf = b.buf[:len(b.buf)+m]
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// spare is the free capacity of the kept head, grown (never past limit)
// when full; nil once limit bytes are kept.
func (b *Buffer) spare() []byte {
	if len(b.buf) >= b.limit {
		return nil
	}
	if len(b.buf) == cap(b.buf) {
		grown := make([]byte, len(b.buf), min(max(2*cap(b.buf), 1024), b.limit))
		copy(grown, b.buf)
		b.buf = grown
	}
	return b.buf[len(b.buf):cap(b.buf)]
}

// Marker is the note appended to stderr for a stream that the reply does not
// carry whole: kept of total bytes, and whether reading stopped early
// because a background process held the stream open after the command
// exited.
func Marker(stream string, kept int, total int64, cut bool) string {
	switch {
	case cut && int64(kept) < total:
		return fmt.Sprintf("\n[opengeni-agent: %s truncated: kept %d of %d bytes; stopped reading after the command exited because a background process kept the stream open]\n", stream, kept, total)
	case cut:
		return fmt.Sprintf("\n[opengeni-agent: %s cut: read %d bytes; stopped reading after the command exited because a background process kept the stream open]\n", stream, total)
	default:
		return fmt.Sprintf("\n[opengeni-agent: %s truncated: kept %d of %d bytes]\n", stream, kept, total)
	}
}

// Fit shares limit bytes between stdout and stderr: each stream gets at least
// half (or all it has), the other takes what is left, and the markers of the
// streams not carried whole go to the end of stderr, stdout's first. The
// result never exceeds limit and never aliases a Buffer's spare capacity.
func Fit(out, errs *Buffer, limit int) (stdout, stderr []byte, truncated bool) {
	limit = max(limit, 0)
	if out.complete() && errs.complete() && out.total+errs.total <= int64(limit) {
		return out.Bytes(), errs.Bytes(), false
	}
	// Reserve room for both markers at their longest (kept <= total).
	avail := limit - len(Marker("stdout", int(out.total), out.total, out.cut)) -
		len(Marker("stderr", int(errs.total), errs.total, errs.cut))
	avail = max(avail, 0)
	kOut := min(len(out.buf), avail/2)
	kErr := min(len(errs.buf), avail-kOut)
	kOut = min(len(out.buf), avail-kErr)

	stdout = out.buf[:kOut]
	stderr = errs.buf[:kErr:kErr] // full slice expression: appending must copy
	if out.cut || int64(kOut) < out.total {
		stderr = append(stderr, Marker("stdout", kOut, out.total, out.cut)...)
	}
	if errs.cut || int64(kErr) < errs.total {
		stderr = append(stderr, Marker("stderr", kErr, errs.total, errs.cut)...)
	}
	// Only a budget smaller than the markers themselves gets here.
	if len(stdout)+len(stderr) > limit {
		stderr = stderr[:max(limit-len(stdout), 0)]
	}
	if len(stdout) == 0 {
		stdout = nil
	}
	return stdout, stderr, true
}
