package console

import (
	"fmt"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/gitsvc"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// fileView is one directory entry.
type fileView struct {
	Name       string `json:"name"`
	Path       string `json:"path"`
	Kind       string `json:"kind"` // dir | file | symlink | other
	Size       uint64 `json:"size"`
	ModifiedMs int64  `json:"modifiedMs"`
}

func kindName(k agentpb.FsEntryKind) string {
	switch k {
	case agentpb.FsEntryKind_FS_ENTRY_KIND_DIRECTORY:
		return "dir"
	case agentpb.FsEntryKind_FS_ENTRY_KIND_FILE:
		return "file"
	case agentpb.FsEntryKind_FS_ENTRY_KIND_SYMLINK:
		return "symlink"
	}
	return "other"
}

// handleList lists one directory (?path=, "" is the workspace root).
func (c *Console) handleList(w http.ResponseWriter, r *http.Request) {
	c.withSession(w, r, func(s *control.Session) error {
		ents, err := s.ListFiles(r.Context(), r.URL.Query().Get("path"), false)
		if err != nil {
			return err
		}
		out := make([]fileView, 0, len(ents))
		for _, e := range ents {
			out = append(out, fileView{Name: e.GetName(), Path: e.GetPath(), Kind: kindName(e.GetKind()), Size: e.GetSize(), ModifiedMs: e.GetModifiedMs()})
		}
		writeJSON(w, http.StatusOK, map[string]any{"path": r.URL.Query().Get("path"), "entries": out})
		return nil
	})
}

// handleDownload streams a file of any size (ranged, pipelined reads).
func (c *Console) handleDownload(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	c.withSession(w, r, func(s *control.Session) error {
		st, err := s.Stat(r.Context(), p)
		if err != nil {
			return err
		}
		if !st.GetExists() {
			return &control.Error{Code: agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, OSNotFound: true, Message: p + ": no such file"}
		}
		if st.GetEntry().GetKind() != agentpb.FsEntryKind_FS_ENTRY_KIND_FILE {
			return fmt.Errorf("%w: %s is not a file", errBadRequest, p)
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatUint(st.GetEntry().GetSize(), 10))
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(strings.ReplaceAll(p, "\\", "/"))}))
		if _, err := s.ReadFileAll(r.Context(), p, w, nil); err != nil {
			// Headers are out: a short body is what the browser sees.
			c.log.Warn("console download cut short", "path", p, "err", err)
		}
		return nil
	})
}

// handleUpload writes the request body to ?path= (any size: the chunked,
// pipelined write into a part file, then moved into place).
func (c *Console) handleUpload(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if p == "" || r.ContentLength < 0 {
		fail(w, http.StatusBadRequest, "need ?path= and a Content-Length")
		return
	}
	c.withSession(w, r, func(s *control.Session) error {
		n, err := s.WriteFileAll(r.Context(), p, r.Body, r.ContentLength, nil)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"path": p, "bytes": n})
		return nil
	})
}

type pathBody struct {
	Path string `json:"path"`
	From string `json:"from"`
	To   string `json:"to"`
	Cwd  string `json:"cwd"`
	// Command is a one-off shell command.
	Command string `json:"command"`
}

// jsonOp decodes a pathBody and runs f with the machine's session.
func (c *Console) jsonOp(w http.ResponseWriter, r *http.Request, f func(s *control.Session, b pathBody) (any, error)) {
	var b pathBody
	if err := readJSON(r, &b); err != nil {
		c.failOp(w, r, err)
		return
	}
	c.withSession(w, r, func(s *control.Session) error {
		out, err := f(s, b)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	})
}

func required(name, v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("%w: %s is required", errBadRequest, name)
	}
	return nil
}

func (c *Console) handleMkdir(w http.ResponseWriter, r *http.Request) {
	c.jsonOp(w, r, func(s *control.Session, b pathBody) (any, error) {
		if err := required("path", b.Path); err != nil {
			return nil, err
		}
		return map[string]bool{"ok": true}, s.Mkdir(r.Context(), b.Path, true, 0)
	})
}

func (c *Console) handleRename(w http.ResponseWriter, r *http.Request) {
	c.jsonOp(w, r, func(s *control.Session, b pathBody) (any, error) {
		if err := required("from", b.From); err != nil {
			return nil, err
		}
		if err := required("to", b.To); err != nil {
			return nil, err
		}
		return map[string]bool{"ok": true}, s.Move(r.Context(), b.From, b.To, false)
	})
}

func (c *Console) handleDelete(w http.ResponseWriter, r *http.Request) {
	c.jsonOp(w, r, func(s *control.Session, b pathBody) (any, error) {
		if err := required("path", b.Path); err != nil {
			return nil, err
		}
		return map[string]bool{"ok": true}, s.Remove(r.Context(), b.Path, true)
	})
}

func (c *Console) handleGitStatus(w http.ResponseWriter, r *http.Request) {
	c.jsonOp(w, r, func(s *control.Session, b pathBody) (any, error) {
		return gitsvc.New(gitsvc.SessionRunner(s), gitsvc.Options{}).Status(r.Context(), b.Path)
	})
}

// handleExec runs a one-off shell command and returns its output.
func (c *Console) handleExec(w http.ResponseWriter, r *http.Request) {
	c.jsonOp(w, r, func(s *control.Session, b pathBody) (any, error) {
		if err := required("command", b.Command); err != nil {
			return nil, err
		}
		res, err := s.Exec(r.Context(), control.ExecOptions{Cmd: b.Command, Workdir: b.Cwd})
		if err != nil {
			return nil, err
		}
		return map[string]any{"stdout": res.Stdout, "stderr": res.Stderr, "exitCode": res.ExitCode}, nil
	})
}
