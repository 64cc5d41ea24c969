package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxDownload bounds any single download (manifest, signature, artifact).
const maxDownload = 200 << 20

// Options configure an Updater. Zero values get the defaults noted.
type Options struct {
	BaseURL        string // default DefaultBaseURL; http(s):// or file://
	Channel        string // default "stable"
	AgentID        string // rollout cohort key; default "unenrolled"
	CurrentVersion string // required: the running build's version
	Target         string // default Target()
	PublicKey      string // minisign key text; default the pinned PublicKey
	Executable     string // binary to replace; default os.Executable, symlinks resolved
	Force          bool   // ignore the rollout gate
	AllowSame      bool   // accept candidate == current (repair)

	HTTPClient    *http.Client  // default: 5 minute timeout
	HealthTimeout time.Duration // default 15s

	// Drain runs after the new binary passed its health gate and before
	// Restart: the lead wires it to update_may_proceed and to stopping the
	// running agent with GoingOffline UPDATE. An error aborts the update
	// and restores the previous binary (nothing was restarted yet).
	Drain func(ctx context.Context) error
	// Restart makes the new binary the running agent (a service restart).
	// Nil: the caller restarts.
	Restart func(ctx context.Context) error
	// Verify runs after Restart and checks the restarted agent serves
	// (for example the service is active a few seconds later). An error
	// rolls back to the previous binary and calls Restart again.
	Verify func(ctx context.Context) error

	// Progress, when set, is told when Check moves on to a stage (the
	// fleet update's DOWNLOADING and VERIFYING progress events).
	Progress func(Stage)

	Logger *slog.Logger
}

// Stage is a step of Check reported to Options.Progress.
type Stage int

const (
	// StageDownloading: fetching the manifest, the artifact and their signatures.
	StageDownloading Stage = iota + 1
	// StageVerifying: the artifact is downloaded; checking its signature and sha256.
	StageVerifying
)

func (u *Updater) progress(s Stage) {
	if u.o.Progress != nil {
		u.o.Progress(s)
	}
}

// Updater checks for and applies updates of one binary.
type Updater struct {
	o Options
}

// New validates opts and applies defaults.
func New(opts Options) (*Updater, error) {
	if opts.CurrentVersion == "" {
		return nil, errors.New("update: CurrentVersion is required")
	}
	if opts.BaseURL == "" {
		opts.BaseURL = DefaultBaseURL
	}
	if opts.Channel == "" {
		opts.Channel = "stable"
	}
	if opts.AgentID == "" {
		opts.AgentID = "unenrolled"
	}
	if opts.Target == "" {
		opts.Target = Target()
	}
	if opts.PublicKey == "" {
		opts.PublicKey = PublicKey
	}
	if _, err := ParsePublicKey(opts.PublicKey); err != nil {
		return nil, err
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 5 * time.Minute}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Logger = opts.Logger.With("component", "update")
	return &Updater{o: opts}, nil
}

// Result is what Check found.
type Result struct {
	Available bool   // a verified newer build is ready to Apply
	Reason    string // why not, when !Available
	Current   string
	Manifest  *Manifest
	Artifact  Artifact
	Binary    []byte // the verified artifact, when Available
}

// ManifestURL is where the channel manifest lives.
func (u *Updater) ManifestURL() string {
	return strings.TrimRight(u.o.BaseURL, "/") + "/agent/" + u.o.Channel + "/manifest.json"
}

// Check fetches and verifies the manifest, applies the version and rollout
// gates, then downloads and verifies the artifact for this target. Gate
// refusals are a Result with Available false, not errors; signature,
// checksum, download and manifest problems are errors.
func (u *Updater) Check(ctx context.Context) (*Result, error) {
	pub, _ := ParsePublicKey(u.o.PublicKey)
	u.progress(StageDownloading)
	murl := u.ManifestURL()
	body, err := u.fetch(ctx, murl)
	if err != nil {
		return nil, err
	}
	sig, err := u.fetch(ctx, murl+".minisig")
	if err != nil {
		return nil, err
	}
	if err := VerifySignature(pub, body, sig); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", murl, err)
	}
	m, err := ParseManifest(body)
	if err != nil {
		return nil, err
	}
	res := &Result{Current: u.o.CurrentVersion, Manifest: m}
	if m.Channel != u.o.Channel {
		return nil, fmt.Errorf("%w: manifest is for channel %q, asked for %q", ErrManifest, m.Channel, u.o.Channel)
	}
	if err := VersionGate(m.Version, u.o.CurrentVersion, m.MinSupported, u.o.AllowSame); err != nil {
		res.Reason = strings.TrimPrefix(err.Error(), ErrVersionGate.Error()+": ")
		return res, nil
	}
	if !u.o.Force && !m.Force && !InRollout(u.o.AgentID, m.CohortSalt, m.RolloutPercent) {
		res.Reason = fmt.Sprintf("version %s is staged at %d%% and this agent is not yet in the cohort", m.Version, m.RolloutPercent)
		return res, nil
	}
	a, err := m.ArtifactFor(u.o.Target)
	if err != nil {
		return nil, err
	}
	aurl, err := resolve(murl, a.URL)
	if err != nil {
		return nil, err
	}
	surl, err := resolve(murl, a.MinisigURL)
	if err != nil {
		return nil, err
	}
	bin, err := u.fetch(ctx, aurl)
	if err != nil {
		return nil, err
	}
	asig, err := u.fetch(ctx, surl)
	if err != nil {
		return nil, err
	}
	u.progress(StageVerifying)
	if err := VerifySignature(pub, bin, asig); err != nil {
		return nil, fmt.Errorf("artifact %s: %w", aurl, err)
	}
	if err := VerifySHA256(bin, a.SHA256); err != nil {
		return nil, fmt.Errorf("artifact %s: %w", aurl, err)
	}
	res.Available, res.Artifact, res.Binary = true, a, bin
	return res, nil
}

// Applied reports what Apply did.
type Applied struct {
	Path       string // the binary that was replaced
	Previous   string // where the prior binary is kept ("" on a first install)
	Version    string
	Restarted  bool
	RolledBack bool
}

// Apply installs a Result from Check: swap (keeping <bin>.previous), run the
// new binary's health gate (rolling back on failure), then Drain, Restart
// and Verify (rolling back and restarting the previous binary on failure).
func (u *Updater) Apply(ctx context.Context, res *Result) (*Applied, error) {
	if res == nil || !res.Available {
		return nil, errors.New("update: nothing to apply")
	}
	exe, err := u.executable()
	if err != nil {
		return nil, err
	}
	log := u.o.Logger.With("path", exe, "from", res.Current, "to", res.Manifest.Version)
	kept, err := Swap(exe, res.Binary)
	if err != nil {
		return nil, err
	}
	out := &Applied{Path: exe, Version: res.Manifest.Version}
	if kept {
		out.Previous = PreviousPath(exe)
	}
	rollback := func(cause error) error {
		out.RolledBack = true
		if !kept {
			_ = os.Remove(exe)
			return cause
		}
		if err := Rollback(exe); err != nil {
			return fmt.Errorf("%w (and the rollback failed: %v)", cause, err)
		}
		log.Warn("update rolled back", "err", cause)
		return cause
	}
	if err := HealthCheck(ctx, exe, res.Manifest.Version, u.o.HealthTimeout); err != nil {
		return out, rollback(err)
	}
	log.Info("new binary passed its health gate")
	if u.o.Drain != nil {
		if err := u.o.Drain(ctx); err != nil {
			return out, rollback(fmt.Errorf("drain before restart: %w", err))
		}
	}
	if u.o.Restart == nil {
		return out, nil
	}
	if err := u.o.Restart(ctx); err != nil {
		err = rollback(fmt.Errorf("%w: restart with the new binary: %v", ErrHealthCheck, err))
		_ = u.o.Restart(ctx)
		return out, err
	}
	out.Restarted = true
	if u.o.Verify != nil {
		if err := u.o.Verify(ctx); err != nil {
			err = rollback(fmt.Errorf("%w: the restarted agent is not serving: %v", ErrHealthCheck, err))
			if rerr := u.o.Restart(ctx); rerr != nil {
				log.Error("restart of the previous binary failed", "err", rerr)
			}
			return out, err
		}
	}
	return out, nil
}

func (u *Updater) executable() (string, error) {
	exe := u.o.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return "", fmt.Errorf("locate the running binary: %w", err)
		}
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return exe, nil
}

// resolve makes ref absolute against the manifest URL.
func resolve(base, ref string) (string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("%w: bad manifest url: %v", ErrManifest, err)
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("%w: bad artifact url %q: %v", ErrManifest, ref, err)
	}
	return b.ResolveReference(r).String(), nil
}

func (u *Updater) fetch(ctx context.Context, raw string) ([]byte, error) {
	pu, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDownload, raw, err)
	}
	var rc io.ReadCloser
	switch pu.Scheme {
	case "file":
		f, err := os.Open(filepath.FromSlash(pu.Path))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDownload, err)
		}
		rc = f
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrDownload, raw, err)
		}
		req.Header.Set("User-Agent", "opengeni-agent-update/"+u.o.CurrentVersion)
		resp, err := u.o.HTTPClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDownload, err)
		}
		if resp.StatusCode/100 != 2 {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: GET %s: %s", ErrDownload, raw, resp.Status)
		}
		rc = resp.Body
	default:
		return nil, fmt.Errorf("%w: unsupported url scheme in %q", ErrDownload, raw)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxDownload+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDownload, raw, err)
	}
	if len(data) > maxDownload {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrDownload, raw, maxDownload)
	}
	return data, nil
}
