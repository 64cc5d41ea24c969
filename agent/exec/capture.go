package exec

import (
	"fmt"
	"io"
)

// responseOverhead bounds what ExecResponse needs beyond the two output byte
// strings: exit_code, timed_out, duration_ms and the fields' tags/lengths.
const responseOverhead = 64

// capture keeps the head of a stream, at most limit bytes, and counts the
// rest. It never fails a write: the child must keep running even when its
// output no longer fits.
type capture struct {
	limit int
	buf   []byte
	total int64
}

func (c *capture) Write(p []byte) (int, error) {
	c.total += int64(len(p))
	for rest := p; len(rest) > 0; {
		dst := c.spare()
		if dst == nil {
			break
		}
		n := copy(dst, rest)
		c.buf = c.buf[:len(c.buf)+n]
		rest = rest[n:]
	}
	return len(p), nil
}

// ReadFrom lets os/exec's copy read straight into the kept head (saving a
// 32 KiB buffer per stream per command) and count the rest.
func (c *capture) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var scratch []byte
	for {
		dst := c.spare()
		kept := dst != nil
		if !kept {
			if scratch == nil {
				scratch = make([]byte, 32<<10)
			}
			dst = scratch
		}
		m, err := r.Read(dst)
		n += int64(m)
		c.total += int64(m)
		if kept {
			c.buf = c.buf[:len(c.buf)+m]
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
func (c *capture) spare() []byte {
	if len(c.buf) >= c.limit {
		return nil
	}
	if len(c.buf) == cap(c.buf) {
		grown := make([]byte, len(c.buf), min(max(2*cap(c.buf), 1024), c.limit))
		copy(grown, c.buf)
		c.buf = grown
	}
	return c.buf[len(c.buf):cap(c.buf)]
}

// truncationMarker is appended to stderr for each stream that was cut, so
// the reply says so.
func truncationMarker(stream string, kept int, total int64) string {
	return fmt.Sprintf("\n[opengeni-agent: %s truncated: kept %d of %d bytes]\n", stream, kept, total)
}

// fit shares limit bytes between stdout and stderr: each stream gets at least
// half (or all it has), the other takes what is left, and markers for the cut
// streams go to the end of stderr. The result never exceeds limit.
func fit(out, errs *capture, limit int) (stdout, stderr []byte, truncated bool) {
	if out.total+errs.total <= int64(limit) && int64(len(out.buf)) == out.total && int64(len(errs.buf)) == errs.total {
		return out.buf, errs.buf, false
	}
	// Reserve room for both markers at their longest (kept <= total).
	avail := limit - len(truncationMarker("stdout", int(out.total), out.total)) -
		len(truncationMarker("stderr", int(errs.total), errs.total))
	avail = max(avail, 0)
	kOut := min(len(out.buf), avail/2)
	kErr := min(len(errs.buf), avail-kOut)
	kOut = min(len(out.buf), avail-kErr)

	stdout = out.buf[:kOut]
	stderr = errs.buf[:kErr:kErr] // full slice expression: appending must copy
	if int64(kOut) < out.total {
		stderr = append(stderr, truncationMarker("stdout", kOut, out.total)...)
	}
	if int64(kErr) < errs.total {
		stderr = append(stderr, truncationMarker("stderr", kErr, errs.total)...)
	}
	// Only a budget smaller than the markers themselves gets here.
	if len(stdout)+len(stderr) > limit {
		stderr = stderr[:max(limit-len(stdout), 0)]
	}
	return stdout, stderr, true
}
