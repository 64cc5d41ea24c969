// Package opctx carries request-scoped facts from the dispatcher to the
// capability handlers: the reply budget of the connection the request
// arrived on.
package opctx

import "context"

type maxReplyKey struct{}

// ReplyOverhead is what the ControlResponse envelope and field headers may
// take beyond a handler's payload bytes; handlers keep their payload under
// MaxReply(ctx) - ReplyOverhead.
const ReplyOverhead = 4096

// MaxNATSPayload stands in for an unknown transport limit in handlers that
// must never buffer without bound: a NATS server never accepts payloads above
// 64 MiB, so more can never be sent.
const MaxNATSPayload = 64 << 20

// WithMaxReply records the transport's max payload (bytes) for the request.
func WithMaxReply(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, maxReplyKey{}, n)
}

// MaxReply is the transport's max payload for the request, or 0 when unknown
// (no limit is enforced then).
func MaxReply(ctx context.Context) int {
	n, _ := ctx.Value(maxReplyKey{}).(int)
	return n
}

// ReplyLimit is MaxReply, or MaxNATSPayload when the limit is unknown.
func ReplyLimit(ctx context.Context) int {
	if n := MaxReply(ctx); n > 0 {
		return n
	}
	return MaxNATSPayload
}

// BoundedPayloadBudget is PayloadBudget, or MaxNATSPayload when there is no
// limit: what a handler may buffer for its reply, never unbounded.
func BoundedPayloadBudget(ctx context.Context) int {
	if b := PayloadBudget(ctx); b > 0 {
		return b
	}
	return MaxNATSPayload
}

// PayloadBudget is how many payload bytes a handler may put in its reply, or
// 0 when there is no limit.
func PayloadBudget(ctx context.Context) int {
	n := MaxReply(ctx)
	if n <= 0 {
		return 0
	}
	if n <= 2*ReplyOverhead {
		return n / 2
	}
	return n - ReplyOverhead
}
