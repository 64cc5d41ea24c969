package git

import (
	"bytes"
	"strconv"
	"strings"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// parsePorcelainV2 parses `git status --porcelain=v2 --branch` output, with
// or without -z (NUL-separated output is detected), into the wire GitStatus.
//
// Unlike the reference agent it keeps paths with spaces whole, reports a
// rename under its new path, unquotes C-quoted paths, and counts unmerged
// ("u") entries as conflicts, so a conflicted tree is never clean. Codes use
// porcelain v1 letters ('.' becomes ' '): " M", "A ", "R ", "UU", "??".
// Ignored entries ("!!", only with --ignored) are listed but leave the tree
// clean.
func parsePorcelainV2(out []byte) *agentpb.GitStatus {
	st := &agentpb.GitStatus{Clean: true}
	nul := bytes.IndexByte(out, 0) >= 0
	var recs []string
	if nul {
		recs = strings.Split(string(out), "\x00")
	} else {
		recs = strings.Split(string(out), "\n")
	}
	for i := 0; i < len(recs); i++ {
		rec := strings.TrimSuffix(recs[i], "\r")
		if rec == "" {
			continue
		}
		switch rec[0] {
		case '#':
			parseHeader(st, rec)
		case '1':
			if f := splitFields(rec, 9); f != nil {
				st.Files = append(st.Files, changed(f[1], pathField(f[8], nul)))
			}
		case '2':
			if f := splitFields(rec, 10); f != nil {
				p := f[9]
				if nul {
					i++ // the next record is the original path
				} else if newPath, _, ok := strings.Cut(p, "\t"); ok {
					p = newPath // a tab inside a path is quoted as \t
				}
				st.Files = append(st.Files, changed(f[1], pathField(p, nul)))
			}
		case 'u':
			if f := splitFields(rec, 11); f != nil {
				st.Files = append(st.Files, &agentpb.GitFileStatus{Path: pathField(f[10], nul), Code: f[1]})
			}
		case '?':
			if len(rec) > 2 {
				st.Files = append(st.Files, &agentpb.GitFileStatus{Path: pathField(rec[2:], nul), Code: "??"})
			}
		case '!':
			if len(rec) > 2 {
				st.Files = append(st.Files, &agentpb.GitFileStatus{Path: pathField(rec[2:], nul), Code: "!!"})
			}
			continue
		default:
			continue
		}
		if rec[0] != '#' {
			st.Clean = false
		}
	}
	return st
}

// parseHeader applies one "# branch.*" header line.
func parseHeader(st *agentpb.GitStatus, rec string) {
	key, val, _ := strings.Cut(strings.TrimPrefix(rec, "# "), " ")
	switch key {
	case "branch.head":
		st.Branch = val
	case "branch.upstream":
		st.Upstream = val
	case "branch.ab":
		a, b, _ := strings.Cut(val, " ")
		st.Ahead = parseCount(strings.TrimPrefix(a, "+"))
		st.Behind = parseCount(strings.TrimPrefix(b, "-"))
	}
}

func parseCount(s string) int32 {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0
	}
	return int32(n)
}

// splitFields splits rec into n space-separated fields, the last holding the
// rest of the line (the path, which may contain spaces). nil if short.
func splitFields(rec string, n int) []string {
	f := strings.SplitN(rec, " ", n)
	if len(f) < n || len(f[1]) != 2 {
		return nil
	}
	return f
}

// changed is a tracked entry with v2 letters xy.
func changed(xy, path string) *agentpb.GitFileStatus {
	x := xy[0]
	return &agentpb.GitFileStatus{
		Path:   path,
		Code:   v1Code(xy),
		Staged: x != '.' && x != ' ' && x != '?',
	}
}

// v1Code maps a porcelain v2 XY (".M") to porcelain v1 letters (" M").
func v1Code(xy string) string {
	return strings.ReplaceAll(xy, ".", " ")
}

// pathField decodes a path: NUL-separated output is verbatim, line output
// C-quotes paths with special characters.
func pathField(p string, nul bool) string {
	if nul {
		return p
	}
	return unquoteC(p)
}

// unquoteC undoes git's C-style path quoting ("a\tb", "\303\274"); a path
// that is not quoted is returned as is.
func unquoteC(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	s = s[1 : len(s)-1]
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := s[i]; e {
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'v':
			b.WriteByte('\v')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case '0', '1', '2', '3':
			if i+2 < len(s) {
				if n, err := strconv.ParseUint(s[i:i+3], 8, 8); err == nil {
					b.WriteByte(byte(n))
					i += 2
					continue
				}
			}
			b.WriteByte(e)
		default: // \" and \\
			b.WriteByte(e)
		}
	}
	return b.String()
}
