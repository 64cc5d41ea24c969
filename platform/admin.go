package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"
)

// APIError is a non-2xx answer of the enrollment API.
type APIError struct {
	Method, Path string
	Status       int
	Message      string // the API's "error" field, else the body
}

func (e *APIError) Error() string {
	return fmt.Sprintf("platform: %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Message)
}

// AdminClient sends admin requests to an enrollment API with its admin
// bearer.
type AdminClient struct {
	BaseURL string // http://host:port
	Token   string
	HTTP    *http.Client // nil: http.DefaultClient
}

// Do sends one request (body JSON-encoded unless nil; a 2xx answer is
// decoded into out unless nil); a non-2xx answer is an [*APIError].
func (c AdminClient) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, agentenroll.JoinURL(c.BaseURL, path), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		e := &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &body) == nil && body.Error != "" {
			e.Message = body.Error
		}
		return e
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// ApprovePath is the admin route that approves a device-flow request of
// workspace ws.
func ApprovePath(ws string) string { return "/v1/workspaces/" + ws + "/enrollments/device/approve" }

// RevokePath is the admin route that revokes an enrollment.
func RevokePath(ws, agentID string) string {
	return "/v1/workspaces/" + ws + "/enrollments/" + agentID + "/revoke"
}
