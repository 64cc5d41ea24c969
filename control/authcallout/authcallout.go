// Package authcallout is the platform's NATS auth-callout responder
// (control.md §6.4). nats-server sends every agent connection — CONNECT
// auth_token = the "oge_" enrollment bearer — to $SYS.REQ.USER.AUTH; the
// responder answers with a signed authorization response: a user JWT whose
// permissions name exactly one machine ([Grant]; a deliberate deviation from
// the reference's "agent.<ws>.>" and "_INBOX.>", see docs/security.md),
// expiring with the bearer, or a signed denial.
//
// Server configuration (account APP holds the responder's and the control
// plane's users, which bypass the callout; SYS is the system account):
//
//	accounts { APP { users: [ {user: auth, password: …}, {user: control, password: …} ] }, SYS {} }
//	system_account: SYS
//	authorization { auth_callout { issuer: <APP signing account's public nkey>, auth_users: [auth, control], account: APP } }
//
// Revocation: a revoked enrollment is refused at its next connect (the
// enrollment is read on every callout). To cut a live connection, the
// responder remembers which server and client id each grant went to and,
// when the enrollments bucket shows the enrollment revoked, kicks those
// clients through a [Kicker]: [SysKicker] sends nats-server's
// "$SYS.REQ.SERVER.<server_id>.KICK" {"cid": N} over a system-account
// connection (works for any server of a cluster); [KickFunc] adapts an
// embedded server's DisconnectClientByID. The kicked agent reconnects, and
// the callout denies it. Without a Kicker a live connection lasts until its
// user JWT expires (the bearer's expiry).
package authcallout

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/subject"
)

// Subject is the callout request subject.
const Subject = subject.CalloutRequest

// DefaultAccountName is the account agents are placed in.
const DefaultAccountName = "APP"

// Responder defaults ([Config]).
const (
	DefaultConcurrency = 16
	DefaultQueueGroup  = "opengeni-authcallout"
)

// Denial messages (the response's nats.error), checked in this order.
const (
	ErrMsgMissingBearer = "missing enrollment bearer"
	ErrMsgDisabled      = "enrollment credential plane disabled"
	ErrMsgInvalidBearer = "invalid or expired enrollment bearer"
	ErrMsgNotActive     = "enrollment is not active"
	ErrMsgMismatch      = "enrollment identity mismatch"
	// ErrMsgStaleGeneration: the bearer was issued before the enrollment
	// was revoked and re-activated (control.md §9 credentialGeneration).
	ErrMsgStaleGeneration = "stale enrollment credential generation"
	// ErrMsgLeaseHeld: another live runner holds the enrollment's
	// connection lease.
	ErrMsgLeaseHeld = "enrollment is connected from another live runner"
	// ErrMsgBadConnection: the CONNECT name claims a connection instance
	// ("opengeni-agent/connection/<uuid>") that is not a UUID.
	ErrMsgBadConnection = "invalid connection instance"
)

// ErrUndecodable: the request JWT cannot be decoded; no reply is sent and
// the server denies on its callout timeout (fail closed).
var ErrUndecodable = errors.New("authcallout: undecodable authorization request")

// Enrollments is the enrollment lookup the responder needs; [*store.Store]
// implements it.
type Enrollments interface {
	GetEnrollment(ctx context.Context, ws, id string) (store.Enrollment, error)
}

// Leases hold one live connection instance per enrollment (control.md §9
// claimEnrollmentConnection); [*store.Store] implements it.
type Leases interface {
	ClaimConnection(ctx context.Context, ws, id, instance string) error
}

// Kicker disconnects one client connection of one server.
type Kicker interface {
	Kick(ctx context.Context, serverID string, clientID uint64) error
}

// KickFunc adapts a function to [Kicker]; for an embedded server:
//
//	authcallout.KickFunc(func(_ context.Context, _ string, cid uint64) error { return srv.DisconnectClientByID(cid) })
type KickFunc func(ctx context.Context, serverID string, clientID uint64) error

// Kick calls f.
func (f KickFunc) Kick(ctx context.Context, serverID string, clientID uint64) error {
	return f(ctx, serverID, clientID)
}

// SysKicker kicks through nats-server's system API
// ("$SYS.REQ.SERVER.<id>.KICK"); Conn must be a system-account connection.
type SysKicker struct{ Conn *nats.Conn }

// Kick requests the kick and checks the server's answer.
func (k SysKicker) Kick(ctx context.Context, serverID string, clientID uint64) error {
	body, _ := json.Marshal(map[string]uint64{"cid": clientID})
	msg, err := k.Conn.RequestWithContext(ctx, "$SYS.REQ.SERVER."+serverID+".KICK", body)
	if err != nil {
		return fmt.Errorf("authcallout: kick %s/%d: %w", serverID, clientID, err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err == nil && resp.Error != nil {
		return fmt.Errorf("authcallout: kick %s/%d: %s", serverID, clientID, resp.Error.Description)
	}
	return nil
}

// Config configures a [Responder].
type Config struct {
	// Issuer is the callout account's key pair (the SA… seed of
	// OPENGENI_SELFHOSTED_NATS_CALLOUT_ACCOUNT_SEED); its public key is the
	// server's auth_callout issuer. Required.
	Issuer nkeys.KeyPair
	// AccountName is the user JWT's aud: the account agents land in
	// ("APP").
	AccountName string
	// SigningSecret verifies oge_ bearers; "" denies every agent
	// ("enrollment credential plane disabled").
	SigningSecret string
	// Enrollments is read on every callout. Required.
	Enrollments Enrollments
	// Kicker cuts live connections of revoked enrollments (see the package
	// doc); nil leaves them until their JWT expires.
	Kicker Kicker
	// Leases, when set, admit one live connection instance per enrollment
	// (next-revision connections only): a second runner with cloned
	// credentials is denied while the first one's lease lives.
	Leases Leases
	// ConnectionJWTTTL bounds a next-revision connection's user JWT
	// (default [ConnectionJWTTTL]); tests shorten it.
	ConnectionJWTTTL time.Duration
	// MaxConnsPerAgent bounds the remembered connections per enrollment
	// (default 8; the oldest are forgotten).
	MaxConnsPerAgent int
	// Concurrency bounds the callouts answered at once (default
	// [DefaultConcurrency]); more wait in the subscription's queue.
	Concurrency int
	// QueueGroup is the callout subscription's queue group (default
	// [DefaultQueueGroup]): of several responders on one cluster, one
	// answers each callout. Each remembers and, watching revocations,
	// kicks the connections it admitted.
	QueueGroup string
	Now        func() time.Time
	Logger     *slog.Logger
}

// Responder answers auth-callout requests.
type Responder struct {
	cfg       Config
	issuerPub string
	log       *slog.Logger

	mu    sync.Mutex
	conns map[string][]conn // "<ws>.<agent>" → granted connections

	sub    *nats.Subscription
	cancel context.CancelFunc

	// slots bounds the callouts in flight; inflight lets Close wait for
	// them (closed, under mu, stops new ones being counted).
	slots    chan struct{}
	inflight sync.WaitGroup
	closed   bool
}

type conn struct {
	serverID string
	cid      uint64
}

// New validates cfg.
func New(cfg Config) (*Responder, error) {
	if cfg.Issuer == nil || cfg.Enrollments == nil {
		return nil, errors.New("authcallout: New: Issuer and Enrollments are required")
	}
	pub, err := cfg.Issuer.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, errors.New("authcallout: New: Issuer must be an account key pair (SA… seed)")
	}
	if cfg.AccountName == "" {
		cfg.AccountName = DefaultAccountName
	}
	if cfg.ConnectionJWTTTL <= 0 {
		cfg.ConnectionJWTTTL = ConnectionJWTTTL
	}
	if cfg.MaxConnsPerAgent <= 0 {
		cfg.MaxConnsPerAgent = 8
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.QueueGroup == "" {
		cfg.QueueGroup = DefaultQueueGroup
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Responder{cfg: cfg, issuerPub: pub, log: cfg.Logger.With("component", "authcallout"), conns: map[string][]conn{}}, nil
}

// IssuerPublicKey is the auth_callout issuer to configure on the server.
func (r *Responder) IssuerPublicKey() string { return r.issuerPub }

// ReplyWindow is how long an agent may answer a request delivered to it
// (the allow-responses TTL). nats-server's default is 2 minutes, which would
// drop the reply of any exec longer than that; an exec runs at most an hour
// (agent.md), and the control plane waits 5 s beyond its deadline.
const ReplyWindow = time.Hour + 5*time.Minute

// ConnectionJWTTTL is NATS_USER_JWT_TTL_SECONDS: the most a next-revision
// connection's user JWT lives.
const ConnectionJWTTTL = 300 * time.Second

// Grant is the permission set of one agent connection: see
// [subject.AgentGrant] for the rules and docs/security.md for why they
// deviate from control.md §6.4 ("agent.<ws>.>" and "_INBOX.>").
func Grant(workspaceID, agentID, instanceID string) subject.Grant {
	return subject.AgentGrant(workspaceID, agentID, instanceID)
}

// DecodeRequest reads an authorization request JWT without checking its
// signature (segment 2 of 3, base64url JSON). It requires nats.user_nkey.
func DecodeRequest(token string) (*jwt.AuthorizationRequestClaims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, ErrUndecodable
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, ErrUndecodable
	}
	var c jwt.AuthorizationRequestClaims
	if err := json.Unmarshal(raw, &c); err != nil || c.UserNkey == "" {
		return nil, ErrUndecodable
	}
	return &c, nil
}

// Decision is the outcome of one authorization.
type Decision struct {
	Response string // the signed authorization response JWT
	// UserJWT is the granted user JWT ("" on a denial).
	UserJWT string
	// Error is the denial message ("" on a grant).
	Error string
	// WorkspaceID and AgentID are the granted identity.
	WorkspaceID, AgentID string
}

// Authorize decides one request JWT. An undecodable request returns
// ErrUndecodable (send no reply); everything else is a signed response.
func (r *Responder) Authorize(ctx context.Context, requestJWT string) (Decision, error) {
	req, err := DecodeRequest(requestJWT)
	if err != nil {
		return Decision{}, err
	}
	userNkey, serverID := req.UserNkey, req.Server.ID
	deny := func(msg string) (Decision, error) {
		resp, err := r.response(userNkey, serverID, "", msg)
		return Decision{Response: resp, Error: msg}, err
	}
	bearer := req.ConnectOptions.Token
	if bearer == "" {
		return deny(ErrMsgMissingBearer)
	}
	if r.cfg.SigningSecret == "" {
		return deny(ErrMsgDisabled)
	}
	claims, err := enroll.VerifyBearer(r.cfg.SigningSecret, bearer, r.cfg.Now())
	if err != nil {
		return deny(ErrMsgInvalidBearer)
	}
	e, err := r.cfg.Enrollments.GetEnrollment(ctx, claims.WorkspaceID, claims.EnrollmentID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !e.Active()) {
		return deny(ErrMsgNotActive)
	}
	if err != nil {
		return Decision{}, fmt.Errorf("authcallout: read enrollment: %w", err) // fail closed: no reply
	}
	if e.ID != claims.EnrollmentID || e.WorkspaceID != claims.WorkspaceID || claims.AgentID != claims.EnrollmentID ||
		!subject.ValidToken(claims.WorkspaceID) || !subject.ValidToken(claims.AgentID) ||
		claims.SubjectPrefix != subject.Machine(claims.WorkspaceID, claims.AgentID) {
		return deny(ErrMsgMismatch)
	}
	if claims.Generation() != e.Generation() {
		return deny(ErrMsgStaleGeneration)
	}
	inst := subject.InstanceFromName(req.ConnectOptions.Name)
	if strings.HasPrefix(req.ConnectOptions.Name, subject.ConnectionNamePrefix) && (len(inst) != 36 || uuid.Validate(inst) != nil) {
		return deny(ErrMsgBadConnection)
	}

	exp := claims.Exp
	if inst != "" {
		if r.cfg.Leases != nil {
			err := r.cfg.Leases.ClaimConnection(ctx, claims.WorkspaceID, claims.AgentID, inst)
			if errors.Is(err, store.ErrLeaseHeld) {
				return deny(ErrMsgLeaseHeld)
			}
			if err != nil {
				return Decision{}, fmt.Errorf("authcallout: claim connection lease: %w", err) // fail closed
			}
		}
		// Short-lived: the agent reconnects at expiry, and every reconnect
		// re-checks the enrollment, generation and lease (control.md §9).
		exp = min(exp, r.cfg.Now().Add(r.cfg.ConnectionJWTTTL).Unix())
	}
	userJWT, err := encodeUser(r.cfg.Issuer, r.issuerPub, r.cfg.AccountName, claims.AgentID, userNkey,
		Grant(claims.WorkspaceID, claims.AgentID, inst), r.cfg.Now().Unix(), exp)
	if err != nil {
		return Decision{}, err
	}
	resp, err := r.response(userNkey, serverID, userJWT, "")
	if err != nil {
		return Decision{}, err
	}
	r.remember(claims.WorkspaceID, claims.AgentID, serverID, req.ClientInformation.ID)
	return Decision{Response: resp, UserJWT: userJWT, WorkspaceID: claims.WorkspaceID, AgentID: claims.AgentID}, nil
}

// response signs an authorization response: aud = the server id, sub = the
// user nkey, and either the user JWT or the error.
func (r *Responder) response(userNkey, serverID, userJWT, errMsg string) (string, error) {
	return encodeResponse(r.cfg.Issuer, r.issuerPub, serverID, userNkey, userJWT, errMsg, r.cfg.Now().Unix())
}

func (r *Responder) remember(ws, agent, serverID string, cid uint64) {
	if cid == 0 {
		return
	}
	k := ws + "." + agent
	r.mu.Lock()
	defer r.mu.Unlock()
	cs := append(r.conns[k], conn{serverID, cid})
	if n := len(cs) - r.cfg.MaxConnsPerAgent; n > 0 {
		cs = cs[n:]
	}
	r.conns[k] = cs
}

// Start subscribes nc (the callout user's connection) to [Subject] in the
// queue group and, when watch is set, watches the enrollments bucket to kick
// revoked enrollments' live connections. Up to Concurrency callouts are
// answered at once (each is independent: the lease claim is a
// compare-and-set, so racing clones still admit one); a failing one sends
// no reply.
func (r *Responder) Start(nc *nats.Conn, watch *store.Store) error {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.slots = make(chan struct{}, r.cfg.Concurrency)
	sub, err := nc.QueueSubscribe(Subject, r.cfg.QueueGroup, func(m *nats.Msg) {
		// Blocking here (all slots busy) holds further callouts in the
		// subscription's pending queue.
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			<-r.slots
			return
		}
		r.inflight.Add(1)
		r.mu.Unlock()
		go func() {
			defer func() { <-r.slots; r.inflight.Done() }()
			r.answer(ctx, m)
		}()
	})
	if err != nil {
		cancel()
		return fmt.Errorf("authcallout: subscribe: %w", err)
	}
	r.sub = sub
	if err := nc.Flush(); err != nil {
		r.Close()
		return fmt.Errorf("authcallout: subscribe: %w", err)
	}
	if watch != nil {
		if err := watch.WatchEnrollments(ctx, func(e store.Enrollment) {
			if !e.Active() {
				r.Revoked(ctx, e.WorkspaceID, e.ID)
			}
		}); err != nil {
			r.Close()
			return err
		}
	}
	return nil
}

// answer authorizes one callout request and replies.
func (r *Responder) answer(ctx context.Context, m *nats.Msg) {
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	d, err := r.Authorize(cctx, string(m.Data))
	if err != nil {
		r.log.Warn("authorization request left unanswered", "err", err)
		return
	}
	if d.Error != "" {
		r.log.Info("agent connection denied", "reason", d.Error)
	} else {
		r.log.Debug("agent connection authorized", "workspace", d.WorkspaceID, "agent", d.AgentID)
	}
	if err := m.Respond([]byte(d.Response)); err != nil {
		r.log.Warn("authorization reply failed", "err", err)
	}
}

// Revoked kicks every remembered connection of an enrollment and forgets
// them. The watcher calls it; call it directly after revoking when no
// watcher runs.
func (r *Responder) Revoked(ctx context.Context, ws, agent string) {
	k := ws + "." + agent
	r.mu.Lock()
	cs := r.conns[k]
	delete(r.conns, k)
	r.mu.Unlock()
	if r.cfg.Kicker == nil {
		return
	}
	for _, c := range cs {
		kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.cfg.Kicker.Kick(kctx, c.serverID, c.cid)
		cancel()
		if err != nil {
			r.log.Debug("kick", "workspace", ws, "agent", agent, "cid", c.cid, "err", err) // usually already gone
		} else {
			r.log.Info("revoked agent disconnected", "workspace", ws, "agent", agent, "cid", c.cid)
		}
	}
}

// Close stops answering and watching, and waits for the callouts in
// flight.
func (r *Responder) Close() {
	if r.sub != nil {
		_ = r.sub.Unsubscribe()
	}
	if r.cancel != nil {
		r.cancel()
	}
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.inflight.Wait()
}
