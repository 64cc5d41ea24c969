package gitsvc

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
)

// Empty trees, the parent a root commit is diffed against.
const (
	emptyTreeSHA1   = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
	emptyTreeSHA256 = "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"
)

// ShowRequest asks for a commit with its diff, or with FilePath a blob.
type ShowRequest struct {
	Path            string `json:"path"`
	Ref             string `json:"ref,omitempty"` // default HEAD
	FilePath        string `json:"filePath,omitempty"`
	ContextLines    int    `json:"contextLines,omitempty"`
	MaxBytesPerFile int    `json:"maxBytesPerFile,omitempty"`
}

// Show is a commit and its diff, or a blob.
type Show struct {
	Commit *Commit `json:"commit,omitempty"`
	Diff   *Diff   `json:"diff,omitempty"`
	Blob   *Blob   `json:"blob,omitempty"`
}

// Blob is a file's content at a ref, base64-encoded, clamped to the cap.
type Blob struct {
	Ref       string `json:"ref"`
	Path      string `json:"path"`
	Content   string `json:"content"` // base64
	SizeBytes int    `json:"sizeBytes"`
	Truncated bool   `json:"truncated"`
	IsBinary  bool   `json:"isBinary"`
}

// Show returns req.Ref's commit and diff against its first parent (the
// empty tree for a root commit), or the blob at Ref:FilePath.
func (s *Service) Show(ctx context.Context, req ShowRequest) (*Show, error) {
	ref, err := refOrHEAD(req.Ref)
	if err != nil {
		return nil, err
	}
	maxFile := req.MaxBytesPerFile
	if maxFile <= 0 {
		maxFile = s.opts.MaxBytesPerFile
	}
	dir := s.repoWorkdir(req.Path)
	if req.FilePath != "" {
		spec := ref + ":" + strings.TrimPrefix(req.FilePath, "/")
		out, _, code, err := s.git(ctx, dir, "cat-file", "blob", spec)
		if err != nil {
			return nil, err
		}
		if code != 0 && len(out) == 0 {
			return nil, notFound("blob not found: %s", spec)
		}
		b := &Blob{Ref: ref, Path: req.FilePath, SizeBytes: len(out), IsBinary: bytes.IndexByte(out[:min(len(out), 8192)], 0) >= 0}
		if len(out) > maxFile {
			out, b.Truncated = out[:maxFile], true
		}
		b.Content = base64.StdEncoding.EncodeToString(out)
		return &Show{Blob: b}, nil
	}
	log, err := s.Log(ctx, LogRequest{Path: req.Path, Ref: ref, MaxCount: 1})
	if err != nil {
		return nil, err
	}
	if len(log.Commits) == 0 {
		return nil, notFound("commit not found: %s", ref)
	}
	c := log.Commits[0]
	var from string
	switch {
	case len(c.Parents) > 0:
		from = c.Parents[0]
	case len(c.Hash) == 64:
		from = emptyTreeSHA256
	default:
		from = emptyTreeSHA1
	}
	d, err := s.Diff(ctx, DiffRequest{Path: req.Path, FromRef: from, ToRef: c.Hash, ContextLines: req.ContextLines, MaxBytesPerFile: maxFile})
	if err != nil {
		return nil, err
	}
	return &Show{Commit: &c, Diff: d}, nil
}
