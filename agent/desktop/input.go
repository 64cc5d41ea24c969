package desktop

import (
	"context"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// maxScrollClicks caps one scroll event's wheel clicks per axis.
const maxScrollClicks = 32

// ConsentMessage is CONSENT_REQUIRED's message: agent.md §4.3's "screen
// control not consented", then how the machine's owner grants it.
const ConsentMessage = "screen control not consented; the machine's owner grants it with " +
	"`opengeni-agent consent screen-control on` (with OPENGENI_CONFIG_DIR set to the agent's config dir when it is not the default)"

// consentRefused is CONSENT_REQUIRED [ConsentMessage] (agent.md §4.3);
// errors.Is(err, agenterr.ErrConsentRequired) holds.
func consentRefused() error {
	return &agenterr.Error{
		Code:    agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED,
		Message: ConsentMessage,
		Err:     agenterr.ErrConsentRequired,
	}
}

// consented reads the owner's screen-control consent now.
func (d *Desktop) consented() bool {
	return d.opts.Consent != nil && d.opts.Consent()
}

// Input injects one pointer, key or scroll event. Consent is read first, on
// every call: without it the answer is CONSENT_REQUIRED and nothing reaches
// the OS. Coordinates are native display pixels (a screenshot's
// native_width × native_height space).
func (d *Desktop) Input(ctx context.Context, req *agentpb.DesktopInputRequest) (*agentpb.DesktopInputResponse, error) {
	if !d.consented() {
		return nil, consentRefused()
	}
	ev := &agentpb.DesktopInput{}
	switch e := req.GetEvent().(type) {
	case *agentpb.DesktopInputRequest_Pointer:
		ev.Event = &agentpb.DesktopInput_Pointer{Pointer: e.Pointer}
	case *agentpb.DesktopInputRequest_Key:
		ev.Event = &agentpb.DesktopInput_Key{Key: e.Key}
	case *agentpb.DesktopInputRequest_Scroll:
		ev.Event = &agentpb.DesktopInput_Scroll{Scroll: e.Scroll}
	}
	if err := d.inject(ctx, ev); err != nil {
		return nil, err
	}
	return &agentpb.DesktopInputResponse{}, nil
}

// inject performs ev on the current target. Callers have checked consent.
// Key names are parsed before anything is injected, so a bad name has no
// side effect.
func (d *Desktop) inject(ctx context.Context, ev *agentpb.DesktopInput) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var combo keyCombo
	switch e := ev.GetEvent().(type) {
	case nil:
		return agenterr.Invalid("DesktopInput carried no event")
	case *agentpb.DesktopInput_Key:
		if e.Key.GetIsText() {
			if e.Key.GetKey() == "" {
				return nil
			}
			break
		}
		var err error
		if combo, err = parseKey(e.Key.GetKey()); err != nil {
			return agenterr.Invalid("%v", err)
		}
	}
	if _, err := d.target().probe(); err != nil {
		return d.captureErr(err)
	}
	inj, err := d.injector()
	if err != nil {
		return agenterr.Unsupported("desktop input is not available: %v", err)
	}
	switch e := ev.GetEvent().(type) {
	case *agentpb.DesktopInput_Pointer:
		p := e.Pointer
		err = inj.pointer(int(p.GetX()), int(p.GetY()), p.GetAction(), p.GetButton())
	case *agentpb.DesktopInput_Key:
		if e.Key.GetIsText() {
			err = inj.text(e.Key.GetKey())
		} else {
			err = inj.key(combo, e.Key.GetAction())
		}
	case *agentpb.DesktopInput_Scroll:
		s := e.Scroll
		err = inj.scroll(int(s.GetX()), int(s.GetY()), clampClicks(s.GetDeltaX()), clampClicks(s.GetDeltaY()))
	}
	if err != nil {
		return d.captureErr(err)
	}
	return nil
}

func clampClicks(v int32) int {
	return int(max(-maxScrollClicks, min(maxScrollClicks, v)))
}

// Inject performs a viewer's DesktopInput if the owner consents now; it is
// the pump's input path, exported for a stream package that drives its own
// pump. Without consent it returns CONSENT_REQUIRED and does nothing.
func (d *Desktop) Inject(ctx context.Context, ev *agentpb.DesktopInput) error {
	if !d.consented() {
		return consentRefused()
	}
	return d.inject(ctx, ev)
}
