// Package agenterr is the agent's error model: capability packages return
// ordinary wrapped Go errors (or an *Error when they need a specific wire
// code), and the dispatcher maps any error onto the wire AgentError exactly
// once, with ToProto.
package agenterr

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"syscall"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Sentinels for conditions that are not OS errors. Wrap them with %w; ToProto
// maps them to their wire code.
var (
	ErrUnsupported     = errors.New("unsupported operation")
	ErrConsentRequired = errors.New("consent required")
	ErrTimeout         = errors.New("timed out")
	ErrPayloadTooLarge = errors.New("payload too large")
)

// Error is an error with an explicit wire code. Use it when the code cannot
// be derived from a wrapped error, or to attach detail.
type Error struct {
	Code      agentpb.ErrorCode
	Message   string
	Retryable bool
	Detail    map[string]string
	Err       error // optional cause, for errors.Is/As
}

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// New builds an *Error with a formatted message.
func New(code agentpb.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: code == agentpb.ErrorCode_ERROR_CODE_TIMEOUT}
}

// Unsupported reports an op this build or host cannot serve.
func Unsupported(format string, args ...any) *Error {
	return New(agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED, "unsupported operation: "+format, args...)
}

// Invalid reports a request the agent understood but cannot act on (an
// empty command, a NUL byte in a path). It is an OS error with EINVAL, like
// the kernel would answer.
func Invalid(format string, args ...any) *Error {
	e := New(agentpb.ErrorCode_ERROR_CODE_OS, "os error: "+format, args...)
	e.Detail = map[string]string{"errno": strconv.Itoa(int(syscall.EINVAL))}
	return e
}

// TooLarge reports a reply that cannot fit the transport's max payload.
func TooLarge(detail map[string]string, format string, args ...any) *Error {
	e := New(agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, format, args...)
	e.Detail = detail
	e.Err = ErrPayloadTooLarge
	return e
}

// FromIO wraps an OS error with the operation context ("read /x", "spawn ls").
// A missing file becomes NOT_FOUND; any other OS error becomes OS with the
// errno in detail.
func FromIO(context string, err error) error {
	if err == nil {
		return nil
	}
	return &ioError{context: context, err: err}
}

type ioError struct {
	context string
	err     error
}

func (e *ioError) Error() string { return e.context + ": " + e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// ToProto maps any error onto the wire AgentError. nil maps to nil.
func ToProto(err error) *agentpb.AgentError {
	if err == nil {
		return nil
	}
	var ae *Error
	if errors.As(err, &ae) {
		msg := err.Error()
		if msg == "" {
			msg = ae.Code.String()
		}
		return &agentpb.AgentError{Code: ae.Code, Message: msg, Retryable: ae.Retryable, Detail: copyDetail(ae.Detail)}
	}
	var ctxName string
	var ioe *ioError
	if errors.As(err, &ioe) {
		ctxName = ioe.context
	}
	switch {
	case errors.Is(err, ErrUnsupported):
		return &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED, Message: err.Error()}
	case errors.Is(err, ErrConsentRequired):
		return &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED, Message: err.Error()}
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_TIMEOUT, Message: "timed out: " + err.Error(), Retryable: true}
	case errors.Is(err, ErrPayloadTooLarge):
		return &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, Message: err.Error()}
	case errors.Is(err, fs.ErrNotExist):
		return &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "not found: " + err.Error(), Detail: osDetail(ctxName, err)}
	}
	return &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_OS, Message: "os error: " + err.Error(), Detail: osDetail(ctxName, err)}
}

// osDetail carries the operation context and errno, when there is one.
func osDetail(ctxName string, err error) map[string]string {
	d := map[string]string{}
	if ctxName != "" {
		d["context"] = ctxName
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		d["errno"] = strconv.Itoa(int(errno))
	}
	if len(d) == 0 {
		return nil
	}
	return d
}

func copyDetail(d map[string]string) map[string]string {
	if len(d) == 0 {
		return nil
	}
	out := make(map[string]string, len(d))
	for k, v := range d {
		out[k] = v
	}
	return out
}
