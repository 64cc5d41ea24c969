//go:build windows

package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/opengeni/opengeni-agent/internal/backoff"
)

// scm registers the agent as a Windows service through the SCM API.
type scm struct{}

func scmConfig(o Options) mgr.Config {
	return mgr.Config{
		DisplayName:      DisplayName,
		Description:      Description,
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true,
		ErrorControl:     mgr.ErrorNormal,
		BinaryPathName:   winCommandLine(append([]string{o.BinaryPath}, o.Args...)),
	}
}

func (scm) install(ctx context.Context, o Options, def Definition) (Result, error) {
	res := Result{Definition: def}
	if err := os.MkdirAll(dirOf(LogFile(o)), 0o755); err != nil {
		return res, err
	}
	m, err := mgr.Connect()
	if err != nil {
		return res, fmt.Errorf("connect to the service manager (run as administrator): %w", err)
	}
	defer m.Disconnect()
	want := scmConfig(o)
	s, err := m.OpenService(WindowsName)
	if err != nil {
		s, err = m.CreateService(WindowsName, o.BinaryPath, want, o.Args...)
		if err != nil {
			return res, fmt.Errorf("create the %s service: %w", WindowsName, err)
		}
		res.Changed = true
	} else {
		cur, err := s.Config()
		if err != nil {
			s.Close()
			return res, err
		}
		if cur.BinaryPathName != want.BinaryPathName || cur.DisplayName != want.DisplayName ||
			cur.Description != want.Description || cur.StartType != want.StartType || cur.DelayedAutoStart != want.DelayedAutoStart {
			cur.BinaryPathName, cur.DisplayName, cur.Description = want.BinaryPathName, want.DisplayName, want.Description
			cur.StartType, cur.DelayedAutoStart = want.StartType, want.DelayedAutoStart
			if err := s.UpdateConfig(cur); err != nil {
				s.Close()
				return res, fmt.Errorf("update the %s service: %w", WindowsName, err)
			}
			res.Changed = true
		}
	}
	defer s.Close()
	var actions []mgr.RecoveryAction
	for _, d := range scmRecovery {
		actions = append(actions, mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: d})
	}
	if err := s.SetRecoveryActions(actions, uint32(scmResetPeriod.Seconds())); err != nil {
		return res, fmt.Errorf("set recovery actions: %w", err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return res, fmt.Errorf("set recovery on non-crash failures: %w", err)
	}
	st, err := s.Query()
	if err != nil {
		return res, err
	}
	switch {
	case st.State != svc.Running:
		if err := s.Start(); err != nil {
			return res, fmt.Errorf("start the %s service: %w", WindowsName, err)
		}
		res.Started = true
	case res.Changed || o.Restart:
		if err := stopAndWait(ctx, s); err != nil {
			return res, err
		}
		if err := s.Start(); err != nil {
			return res, err
		}
		res.Restarted = true
	}
	return res, nil
}

func stopAndWait(ctx context.Context, s *mgr.Service) error {
	st, err := s.Control(svc.Stop)
	if err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
		return fmt.Errorf("stop the %s service: %w", WindowsName, err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for st.State != svc.Stopped && time.Now().Before(deadline) {
		if err := backoff.SleepCtx(ctx, 300*time.Millisecond); err != nil {
			return err
		}
		if st, err = s.Query(); err != nil {
			return err
		}
	}
	if st.State != svc.Stopped {
		return fmt.Errorf("the %s service did not stop within 45s", WindowsName)
	}
	return nil
}

func withService(fn func(*mgr.Service) error) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service manager: %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(WindowsName)
	if err != nil {
		return fmt.Errorf("the %s service is not installed: %w", WindowsName, err)
	}
	defer s.Close()
	return fn(s)
}

func (scm) uninstall(ctx context.Context, o Options) error {
	err := withService(func(s *mgr.Service) error {
		_ = stopAndWait(ctx, s)
		return s.Delete()
	})
	if err != nil && errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return nil
	}
	return err
}

func (scm) start(ctx context.Context, o Options) error {
	return withService(func(s *mgr.Service) error { return s.Start() })
}

func (scm) stop(ctx context.Context, o Options) error {
	return withService(func(s *mgr.Service) error { return stopAndWait(ctx, s) })
}

func (scm) restart(ctx context.Context, o Options) error {
	return withService(func(s *mgr.Service) error {
		if err := stopAndWait(ctx, s); err != nil {
			return err
		}
		return s.Start()
	})
}

func (scm) status(ctx context.Context, o Options) (State, error) {
	var st State
	err := withService(func(s *mgr.Service) error {
		q, err := s.Query()
		if err != nil {
			return err
		}
		st.Installed, st.Running = true, q.State == svc.Running
		st.Detail = map[svc.State]string{svc.Stopped: "stopped", svc.StartPending: "start pending",
			svc.StopPending: "stop pending", svc.Running: "running", svc.Paused: "paused"}[q.State]
		return nil
	})
	if err != nil && !st.Installed {
		return State{Detail: "not installed"}, nil
	}
	return st, err
}
