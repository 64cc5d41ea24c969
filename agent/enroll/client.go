package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opengeni/opengeni-agent/internal/backoff"
)

// Terminal outcomes of the device flow.
var (
	ErrDenied        = errors.New("enrollment denied by the user")
	ErrExpired       = errors.New("enrollment expired before authorization")
	ErrDisabled      = errors.New("the control plane's credential issuance is disabled for this deployment")
	ErrNoCredentials = errors.New("server reported authorized but returned no credentials")
)

// HTTPError is a non-2xx answer. Body is truncated to 512 characters; the
// API's error bodies carry no secrets.
type HTTPError struct {
	Path       string
	Status     int
	Body       string
	RetryAfter time.Duration // from a Retry-After header; 0 when absent
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("enrollment endpoint %s returned HTTP %d: %s", e.Path, e.Status, e.Body)
}

const (
	maxBody         = 512
	slowDownStep    = 5 * time.Second
	maxPollInterval = 60 * time.Second
	maxRetryAfter   = 5 * time.Minute
	callAttempts    = 5  // start and exchange: tries on 429 / transient failures
	maxTransient    = 10 // poll without an expiry: consecutive transient failures tolerated
)

// Client talks to one control plane's enrollment API.
type Client struct {
	BaseURL        string        // e.g. https://api.opengeni.ai
	HTTP           *http.Client  // default: a plain client
	UserAgent      string        // default "opengeni-agent"
	RequestTimeout time.Duration // per request; default 30s
	Prompt         io.Writer     // where the device-flow prompt is printed; nil discards
	Logger         *slog.Logger  // default: discard

	// Seams for tests: Sleep waits d or until ctx ends; Now is the clock.
	Sleep func(ctx context.Context, d time.Duration) error
	Now   func() time.Time
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	return backoff.SleepCtx(ctx, d)
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// post sends one JSON request and decodes a 2xx answer into out.
func (c *Client) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	timeout := c.RequestTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, JoinURL(c.BaseURL, path), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("enrollment endpoint %s: %w", path, err)
	}
	ua := c.UserAgent
	if ua == "" {
		ua = "opengeni-agent"
	}
	req.Header.Set("User-Agent", ua)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		// The error may quote the URL, never the body: no secret leaks here.
		return &transportError{path: path, err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &transportError{path: path, err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &HTTPError{Path: path, Status: resp.StatusCode, Body: truncate(string(data), maxBody),
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), c.now())}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("enrollment endpoint %s: decode response: %w", path, err)
	}
	return nil
}

type transportError struct {
	path string
	err  error
}

func (e *transportError) Error() string {
	return fmt.Sprintf("enrollment endpoint %s: %v", e.path, e.err)
}
func (e *transportError) Unwrap() error { return e.err }

// transient: worth retrying (rate limit, gateway hiccup, network blip).
// 503 is not: on exchange it means the credential plane is unconfigured.
func transient(err error) bool {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status == http.StatusTooManyRequests || he.Status == http.StatusBadGateway || he.Status == http.StatusGatewayTimeout
	}
	var te *transportError
	return errors.As(err, &te)
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// parseRetryAfter reads delta-seconds or an HTTP date; 0 when absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		d = time.Duration(min(n, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, maxRetryAfter))
}

// call is post with retries for the one-shot endpoints (start, exchange):
// a 429 waits Retry-After (or backs off), transient failures back off, up
// to callAttempts tries.
func (c *Client) call(ctx context.Context, path string, in, out any) error {
	wait := 2 * time.Second
	var err error
	for attempt := 1; ; attempt++ {
		err = c.post(ctx, path, in, out)
		if err == nil || !transient(err) || attempt >= callAttempts || ctx.Err() != nil {
			return err
		}
		d := wait
		var he *HTTPError
		if errors.As(err, &he) && he.RetryAfter > 0 {
			d = he.RetryAfter
		}
		c.logger().Warn("enrollment request failed; retrying", "path", path, "err", err, "retry_in", d)
		if serr := c.sleep(ctx, d); serr != nil {
			return err
		}
		wait = min(wait*2, maxPollInterval)
	}
}

// Start begins a device flow.
func (c *Client) Start(ctx context.Context, req StartRequest) (*StartResponse, error) {
	var resp StartResponse
	if err := c.call(ctx, PathDeviceStart, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Exchange trades a zero-click enroll token (oget_) for credentials.
func (c *Client) Exchange(ctx context.Context, req ExchangeRequest) (*Credentials, error) {
	var resp ExchangeResponse
	if err := c.call(ctx, PathTokenExchange, req, &resp); err != nil {
		return nil, err
	}
	if resp.Credentials == nil {
		return nil, fmt.Errorf("enrollment endpoint %s: response carried no credentials", PathTokenExchange)
	}
	if err := validateCredentials(resp.Credentials); err != nil {
		return nil, err
	}
	return resp.Credentials, nil
}

// DeviceFlow starts a device flow, prints the prompt, and polls until the
// user approves (credentials), denies, or the code expires.
func (c *Client) DeviceFlow(ctx context.Context, req StartRequest) (*Credentials, error) {
	start, err := c.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	if c.Prompt != nil {
		WritePrompt(c.Prompt, start)
	}
	return c.Poll(ctx, start)
}

// WritePrompt prints the device-flow instructions (agent.md §2.3).
func WritePrompt(w io.Writer, s *StartResponse) {
	var b strings.Builder
	b.WriteString("\n  To authorize this machine, visit:\n")
	b.WriteString("      " + s.VerificationURI + "\n")
	b.WriteString("  and enter the code:\n")
	b.WriteString("      " + s.UserCode + "\n")
	if s.VerificationURIComplete != "" {
		b.WriteString("  (or open directly: " + s.VerificationURIComplete + ")\n")
	}
	b.WriteString("\n  Waiting for authorization...\n")
	_, _ = io.WriteString(w, b.String())
}

// Poll polls a started device flow. Unlike the reference agent it does not
// give up on a hiccup: each round sleeps first (interval = max(
// intervalSeconds, 1) s); slow_down adds 5 s to the interval; HTTP 429
// waits Retry-After (never less than the interval) and adds 5 s, or
// without Retry-After doubles the interval; network errors and 502/504 back
// off and retry. It stops with ErrExpired when expiresInSeconds have passed
// (or the server says expired), ErrDenied, ErrDisabled, or any other HTTP
// error.
func (c *Client) Poll(ctx context.Context, start *StartResponse) (*Credentials, error) {
	log := c.logger()
	interval := time.Duration(max(start.IntervalSeconds, 1)) * time.Second
	ceiling := max(maxPollInterval, interval)
	var deadline time.Time
	validity := time.Duration(start.ExpiresInSeconds) * time.Second
	if start.ExpiresInSeconds > 0 {
		deadline = c.now().Add(validity)
	}
	expired := func() error {
		return fmt.Errorf("%w: the code was valid for %s; run `opengeni-agent enroll` again for a new code", ErrExpired, validity)
	}
	log.Info("waiting for authorization", "user_code", start.UserCode, "expires_in", validity, "interval", interval)

	wait := interval
	failures := 0
	for {
		if !deadline.IsZero() {
			left := deadline.Sub(c.now())
			if left <= 0 {
				return nil, expired()
			}
			wait = min(wait, left) // one last poll right at the deadline
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, err
		}
		var resp PollResponse
		err := c.post(ctx, PathDevicePoll, PollRequest{DeviceCode: start.DeviceCode}, &resp)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var he *HTTPError
			switch {
			case errors.As(err, &he) && he.Status == http.StatusTooManyRequests:
				if he.RetryAfter > 0 {
					wait = max(he.RetryAfter, interval)
					interval = min(interval+slowDownStep, ceiling)
				} else {
					interval = min(interval*2, ceiling)
					wait = interval
				}
				log.Info("enrollment server asked to slow down", "next_poll_in", wait, "interval", interval)
				continue
			case transient(err):
				failures++
				if deadline.IsZero() && failures > maxTransient {
					return nil, err
				}
				wait = min(interval<<min(failures, 6), ceiling)
				log.Warn("enrollment poll failed; retrying", "err", err, "retry_in", wait)
				continue
			}
			return nil, err
		}
		failures = 0
		wait = interval
		switch resp.State {
		case StatePending:
		case StateSlowDown:
			interval = min(interval+slowDownStep, ceiling)
			wait = interval
			log.Info("enrollment server asked to slow down", "interval", interval)
		case StateAuthorized:
			if resp.Credentials == nil {
				return nil, ErrNoCredentials
			}
			if err := validateCredentials(resp.Credentials); err != nil {
				return nil, err
			}
			return resp.Credentials, nil
		case StateDenied:
			return nil, ErrDenied
		case StateExpired:
			return nil, fmt.Errorf("%w: the server reports the code expired; run `opengeni-agent enroll` again for a new code", ErrExpired)
		case StateDisabled:
			return nil, ErrDisabled
		default:
			return nil, fmt.Errorf("enrollment endpoint %s: response carried no state", PathDevicePoll)
		}
	}
}
