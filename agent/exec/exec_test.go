package exec

import (
	"context"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestEmptyCommandIsInvalid(t *testing.T) {
	s := New(Options{Root: workspace.Root{Dir: t.TempDir()}})
	for _, cmd := range [][]string{nil, {""}} {
		_, err := s.Exec(context.Background(), &agentpb.ExecRequest{Command: cmd})
		pe := agenterr.ToProto(err)
		if pe == nil || pe.Code != agentpb.ErrorCode_ERROR_CODE_OS || pe.Detail["errno"] == "" {
			t.Errorf("command %q: err = %v (%v), want OS with errno", cmd, err, pe)
		}
	}
}

func TestInvalidEnvIsRefused(t *testing.T) {
	s := New(Options{Root: workspace.Root{Dir: t.TempDir()}})
	for _, env := range []map[string]string{{"A=B": "x"}, {"": "x"}, {"A": "x\x00y"}} {
		_, err := s.Exec(context.Background(), &agentpb.ExecRequest{Command: []string{"true"}, Env: env})
		if pe := agenterr.ToProto(err); pe == nil || pe.Code != agentpb.ErrorCode_ERROR_CODE_OS {
			t.Errorf("env %q: err = %v, want OS error", env, err)
		}
	}
}

func TestTimeoutDefaultsAndClamp(t *testing.T) {
	tests := []struct {
		opts Options
		ms   uint32
		want time.Duration
	}{
		{Options{}, 0, DefaultTimeout},
		{Options{}, 1500, 1500 * time.Millisecond},
		{Options{}, 5 * 3600 * 1000, MaxTimeout},
		{Options{DefaultTimeout: time.Second}, 0, time.Second},
		{Options{DefaultTimeout: 2 * time.Hour, MaxTimeout: time.Minute}, 0, time.Minute},
	}
	for _, tt := range tests {
		if got := New(tt.opts).timeout(tt.ms); got != tt.want {
			t.Errorf("timeout(%d) with %+v = %v, want %v", tt.ms, tt.opts, got, tt.want)
		}
	}
}
