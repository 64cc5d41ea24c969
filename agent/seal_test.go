package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// registrations are every way to change a dispatcher's wiring.
var registrations = []struct {
	name string
	do   func(*Dispatcher)
}{
	{"Handle", func(d *Dispatcher) {
		Handle(d, "fs_read", Heavy, func(context.Context, *agentpb.FsReadRequest) (*agentpb.FsReadResponse, error) { return nil, nil })
	}},
	{"HandleAs", func(d *Dispatcher) {
		HandleAs(d, "op_query", "op_status", Light, func(context.Context, *agentpb.OpQuery) (*agentpb.OpStatus, error) { return nil, nil })
	}},
	{"OrderBy", func(d *Dispatcher) {
		OrderBy(d, "fs_write", func(r *agentpb.FsWriteRequest) string { return r.GetPath() })
	}},
	{"SetObserver", func(d *Dispatcher) { d.SetObserver(nil) }},
	{"SetPause", func(d *Dispatcher) { d.SetPause(nil) }},
}

// sealedPanic runs f and returns what it panicked with, nil if it did not.
func sealedPanic(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			var ok bool
			if err, ok = r.(error); !ok {
				err = fmt.Errorf("panic: %v", r)
			}
		}
	}()
	f()
	return nil
}

// TestRegistrationSealedOnceServing: every registration works before the
// first request and panics with ErrSealed after it, since the tables are
// then read without locks.
func TestRegistrationSealedOnceServing(t *testing.T) {
	for _, r := range registrations {
		t.Run(r.name, func(t *testing.T) {
			d := newTestDispatcher(1)
			if err := sealedPanic(func() { r.do(d) }); err != nil {
				t.Fatalf("before serving: %v", err)
			}
			roundTrip(t, d, &agentpb.ControlRequest{RequestId: "p", Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{}}}, 1<<20)
			if err := sealedPanic(func() { r.do(d) }); !errors.Is(err, ErrSealed) {
				t.Fatalf("after serving: panic %v, want ErrSealed", err)
			}
		})
	}
}

// TestRunSealsRegistration: once Agent.Run started, Dispatcher() can no
// longer be registered on, even before the first request; with requests
// in flight meanwhile, -race sees no write to the handler table.
func TestRunSealsRegistration(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	hellos := subscribe(t, nc, testSubject("hello"))
	ra := startAgent(t, s.ClientURL(), nil)
	next(t, hellos, &agentpb.Hello{}) // Run has started

	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			request(t, nc, &agentpb.ControlRequest{RequestId: fmt.Sprint("p", i), Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{}}})
		}()
	}
	for _, r := range registrations {
		if err := sealedPanic(func() { r.do(ra.Dispatcher()) }); !errors.Is(err, ErrSealed) {
			t.Errorf("%s after Run started: panic %v, want ErrSealed", r.name, err)
		}
	}
	wg.Wait()
}
