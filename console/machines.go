package console

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
)

// machineView is one machine as the console shows it.
type machineView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	OS         string     `json:"os"`
	Arch       string     `json:"arch"`
	Version    string     `json:"version"`
	State      string     `json:"state"` // online | reconnecting | offline
	LastSeenAt *time.Time `json:"lastSeenAt"`
	// OfflineReason is the agent's announced GoingOffline reason.
	OfflineReason string         `json:"offlineReason,omitempty"`
	Display       *store.Display `json:"display"`
	Desktop       bool           `json:"desktop"`
	// ScreenControl is the owner's consent as the agent last announced it
	// (its Hello); WholeMachine likewise. AllowScreenControl is the
	// platform's grant at approval.
	ScreenControl      bool `json:"screenControl"`
	WholeMachine       bool `json:"wholeMachine"`
	AllowScreenControl bool `json:"allowScreenControl"`
	// CPU and Mem are the stored downsampled series (percent), oldest first.
	CPU []float64 `json:"cpu"`
	Mem []float64 `json:"mem"`
}

// seriesPoints is how much of the stored series the chart shows.
const seriesPoints = 120

func (c *Console) machineView(ctx context.Context, e store.EnrollmentView) machineView {
	v := machineView{ID: e.ID, OS: e.OS, Arch: e.Arch, LastSeenAt: e.LastSeenAt, AllowScreenControl: e.AllowScreenControl,
		CPU: []float64{}, Mem: []float64{}}
	if full, err := c.cfg.Store.GetEnrollment(ctx, c.cfg.WorkspaceID, e.ID); err == nil {
		v.Name = full.SandboxName
	}
	if m, err := c.cfg.Store.GetMachine(ctx, c.cfg.WorkspaceID, e.ID); err == nil {
		if m.MachineName != "" {
			v.Name = m.MachineName
		}
		v.Version, v.OfflineReason = m.AgentVersion, m.WentOfflineReason
		if m.OS != "" {
			v.OS, v.Arch = m.OS, m.Arch
		}
		if caps := m.Capabilities; caps != nil {
			v.Display, v.Desktop = caps.Display, caps.Desktop
			v.ScreenControl, v.WholeMachine = caps.ConsentedScreenControl, caps.ConsentedWholeMachine
		}
	}
	if pts, err := c.cfg.Store.MetricsSeries(ctx, c.cfg.WorkspaceID, e.ID); err == nil {
		if len(pts) > seriesPoints {
			pts = pts[len(pts)-seriesPoints:]
		}
		for _, p := range pts {
			v.CPU = append(v.CPU, p.CPUPercent)
			mem := 0.0
			if p.MemTotalBytes > 0 {
				mem = 100 * float64(p.MemUsedBytes) / float64(p.MemTotalBytes)
			}
			v.Mem = append(v.Mem, mem)
		}
	}
	live, err := c.cfg.Store.Liveness(ctx, c.cfg.WorkspaceID, e.ID, c.pings.responded(ctx, c, e.ID))
	if err == nil {
		v.State = string(live.State)
	} else {
		v.State = string(control.StateOffline)
	}
	return v
}

// handleMachines lists the workspace's active machines.
func (c *Console) handleMachines(w http.ResponseWriter, r *http.Request) {
	es, err := c.cfg.Store.ListEnrollments(r.Context(), c.cfg.WorkspaceID, control.EnrollmentActive)
	if err != nil {
		c.failOp(w, r, err)
		return
	}
	out := make([]machineView, len(es))
	var wg sync.WaitGroup
	for i, e := range es {
		wg.Go(func() { out[i] = c.machineView(r.Context(), e) })
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, map[string]any{"machines": out})
}

// handleMachine is one machine, revoked ones included.
func (c *Console) handleMachine(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	es, err := c.cfg.Store.ListEnrollments(r.Context(), c.cfg.WorkspaceID, "")
	if err != nil {
		c.failOp(w, r, err)
		return
	}
	for _, e := range es {
		if e.ID == id {
			writeJSON(w, http.StatusOK, c.machineView(r.Context(), e))
			return
		}
	}
	c.failOp(w, r, store.ErrNotFound)
}

// pingCache remembers each machine's last probe for a moment, so many tabs
// polling the list cost one ping per machine, not one each.
type pingCache struct {
	mu sync.Mutex
	m  map[string]*pingEntry
}

type pingEntry struct {
	once sync.Once
	ok   bool
	at   time.Time
}

const (
	pingFresh   = 2 * time.Second
	pingTimeout = 3 * time.Second
)

func newPingCache() *pingCache { return &pingCache{m: map[string]*pingEntry{}} }

func (p *pingCache) responded(ctx context.Context, c *Console, id string) bool {
	p.mu.Lock()
	e := p.m[id]
	if e == nil || time.Since(e.at) > pingFresh {
		e = &pingEntry{at: time.Now()}
		p.m[id] = e
	}
	p.mu.Unlock()
	e.once.Do(func() {
		s, err := c.session(ctx, id)
		if err != nil {
			return
		}
		// Not the request's context: the result is shared with other callers.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pingTimeout)
		defer cancel()
		e.ok = s.Ping(pctx)
	})
	return e.ok
}
