package console

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// The desktop: one view-mode relay viewer per machine (desktop_ensure, an
// ogs_ token minted here), shared by every browser watching it. The agent
// sends a PNG frame only when the pixels changed; the console keeps the
// latest and pushes each new one as a server-sent event. Input goes as
// desktop_input ops, and only when the machine announced its owner's
// screen-control consent (the agent refuses without it too).

type desktop struct {
	machine string
	v       *control.StreamViewer
	watched

	mu      sync.Mutex
	changed chan struct{}
	frame   []byte
	seq     int64
	ended   bool
	endMsg  string
}

func (d *desktop) pump() {
	for f := range d.v.Output() {
		d.mu.Lock()
		d.frame, d.seq = f, d.seq+1
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
	msg := "the desktop stream ended"
	if err := d.v.Err(); err != nil {
		msg = err.Error()
	}
	d.mu.Lock()
	d.ended, d.endMsg = true, msg
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

func (d *desktop) latest() (frame []byte, seq int64, ended bool, msg string, changed <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.frame, d.seq, d.ended, d.endMsg, d.changed
}

type desktops struct {
	c  *Console
	mu sync.Mutex
	m  map[string]*desktop
}

// desktopIdle closes a desktop viewer no browser has watched for this long.
const desktopIdle = 2 * time.Minute

func newDesktops(c *Console) *desktops {
	ds := &desktops{c: c, m: map[string]*desktop{}}
	go reapIdle(c.ctx, reapEvery, &ds.mu, ds.m, desktopIdle, (*desktop).idleFor, func(d *desktop) { d.v.Close() })
	return ds
}

func (ds *desktops) closeAll() {
	ds.mu.Lock()
	all := ds.m
	ds.m = map[string]*desktop{}
	ds.mu.Unlock()
	for _, d := range all {
		d.v.Close()
	}
}

// start returns the machine's live desktop viewer, starting one when there
// is none or the last one ended.
func (ds *desktops) start(ctx context.Context, s *control.Session) (*desktop, error) {
	id := s.AgentID()
	ds.mu.Lock()
	d := ds.m[id]
	ds.mu.Unlock()
	if d != nil {
		if _, _, ended, _, _ := d.latest(); !ended {
			return d, nil
		}
	}
	ens, err := s.DesktopEnsure(ctx, 0, 0)
	if err != nil {
		return nil, err
	}
	ep, err := s.ResolveExposedPort(ctx, control.DesktopStreamPort)
	if err != nil {
		return nil, err
	}
	url, err := control.BuildStreamURL(*ep)
	if err != nil {
		return nil, err
	}
	claims := control.StreamTokenClaims{WorkspaceID: ds.c.cfg.WorkspaceID, AgentID: id, Mode: control.StreamModeView,
		Port: control.DesktopStreamPort}
	v, err := control.DialStream(ctx, control.ViewerOptions{URL: url, Channel: ens.GetChannel(), Logger: ds.c.log,
		Token: func(context.Context) (string, error) {
			tok, _, err := control.MintViewerToken(ds.c.cfg.StreamSecret, claims, 0)
			return tok, err
		}})
	if err != nil {
		return nil, err
	}
	d = &desktop{machine: id, v: v, changed: make(chan struct{}), watched: watched{lastSeen: time.Now()}}
	go d.pump()
	ds.mu.Lock()
	if old := ds.m[id]; old != nil && old != d {
		if _, _, ended, _, _ := old.latest(); !ended { // another browser won the race
			ds.mu.Unlock()
			v.Close()
			return old, nil
		}
	}
	ds.m[id] = d
	ds.mu.Unlock()
	return d, nil
}

func (ds *desktops) get(id string) *desktop {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return ds.m[id]
}

func (c *Console) handleDesktopStart(w http.ResponseWriter, r *http.Request) {
	c.withSession(w, r, func(s *control.Session) error {
		if _, err := c.desk.start(r.Context(), s); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		return nil
	})
}

// handleDesktopFrames streams frames as "frame" events (base64 PNG, id =
// the frame's sequence number) and one "end" event.
func (c *Console) handleDesktopFrames(w http.ResponseWriter, r *http.Request) {
	d := c.desk.get(r.PathValue("id"))
	if d == nil {
		fail(w, http.StatusNotFound, "the desktop is not started")
		return
	}
	d.enter()
	defer d.leave()
	sse := startSSE(w)
	var sent int64
	for {
		frame, seq, ended, msg, changed := d.latest()
		if seq != sent && frame != nil {
			if sse.event("frame", strconv.FormatInt(seq, 10), base64.StdEncoding.EncodeToString(frame)) != nil {
				return
			}
			sent = seq
			continue
		}
		if ended {
			_ = sse.event("end", "", msg)
			return
		}
		if !sse.wait(r.Context(), changed) {
			return
		}
	}
}

// inputBody is one input event in frame-image pixels.
type inputBody struct {
	Kind string `json:"kind"` // move | click | doubleclick | scroll | type | key
	X    int    `json:"x"`
	Y    int    `json:"y"`
	// Width and Height are the frame's size the coordinates refer to.
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Button string `json:"button"` // left (default) | right | middle
	DX     int    `json:"dx"`
	DY     int    `json:"dy"`
	Text   string `json:"text"` // type: text; key: a key name (Return, ctrl+c)
}

var buttons = map[string]agentpb.PointerButton{"": agentpb.PointerButton_POINTER_BUTTON_LEFT,
	"left": agentpb.PointerButton_POINTER_BUTTON_LEFT, "right": agentpb.PointerButton_POINTER_BUTTON_RIGHT,
	"middle": agentpb.PointerButton_POINTER_BUTTON_MIDDLE}

func (b inputBody) request(native *agentpb.Display) (*agentpb.DesktopInputRequest, error) {
	if b.Kind == "type" || b.Kind == "key" {
		if b.Text == "" {
			return nil, fmt.Errorf("%w: %s needs text", errBadRequest, b.Kind)
		}
		return &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Key{Key: &agentpb.KeyEvent{
			Key: b.Text, IsText: b.Kind == "type", Action: agentpb.KeyAction_KEY_ACTION_PRESS}}}, nil
	}
	if b.Width <= 0 || b.Height <= 0 {
		return nil, fmt.Errorf("%w: width and height (the frame's size) are required", errBadRequest)
	}
	// A display the agent did not announce is taken as the frame's size.
	shot := &control.Screenshot{Width: uint32(b.Width), Height: uint32(b.Height), NativeWidth: native.GetWidth(), NativeHeight: native.GetHeight()}
	if shot.NativeWidth == 0 || shot.NativeHeight == 0 {
		shot.NativeWidth, shot.NativeHeight = shot.Width, shot.Height
	}
	btn, ok := buttons[b.Button]
	if !ok {
		return nil, fmt.Errorf("%w: unknown button %q", errBadRequest, b.Button)
	}
	switch b.Kind {
	case "move":
		return control.PointerInput(shot, b.X, b.Y, agentpb.PointerAction_POINTER_ACTION_MOVE, btn), nil
	case "click":
		return control.PointerInput(shot, b.X, b.Y, agentpb.PointerAction_POINTER_ACTION_CLICK, btn), nil
	case "doubleclick":
		return control.PointerInput(shot, b.X, b.Y, agentpb.PointerAction_POINTER_ACTION_DOUBLE_CLICK, btn), nil
	case "scroll":
		return control.ScrollInput(shot, b.X, b.Y, b.DX, b.DY), nil
	}
	return nil, fmt.Errorf("%w: unknown input kind %q", errBadRequest, b.Kind)
}

// errNoConsent: the console sends no input the machine did not consent to.
var errNoConsent = &control.Error{Code: agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED, Reason: control.ReasonConsentRequired,
	Message: "the machine's owner has not consented to screen control (on the machine: opengeni-agent consent screen-control on)"}

func (c *Console) handleDesktopInput(w http.ResponseWriter, r *http.Request) {
	var b inputBody
	if err := readJSON(r, &b); err != nil {
		c.failOp(w, r, err)
		return
	}
	c.withSession(w, r, func(s *control.Session) error {
		m, err := c.cfg.Store.GetMachine(r.Context(), c.cfg.WorkspaceID, s.AgentID())
		if err != nil {
			return err
		}
		if m.Capabilities == nil || !m.Capabilities.ConsentedScreenControl {
			return errNoConsent
		}
		var native *agentpb.Display
		if d := m.Capabilities.Display; d != nil {
			native = &agentpb.Display{Width: d.Width, Height: d.Height}
		}
		in, err := b.request(native)
		if err != nil {
			return err
		}
		if err := s.DesktopInput(r.Context(), in); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		return nil
	})
}

// handleScreenshot answers one PNG of the display, as a download.
func (c *Console) handleScreenshot(w http.ResponseWriter, r *http.Request) {
	c.withSession(w, r, func(s *control.Session) error {
		shot, err := s.Screenshot(r.Context())
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="screenshot-%s.png"`, time.Now().UTC().Format("20060102-150405")))
		_, err = w.Write(shot.PNG)
		return err
	})
}
