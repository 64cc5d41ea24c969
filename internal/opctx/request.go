package opctx

import "context"

type requestIDKey struct{}

// WithRequestID records the ControlRequest's request_id: the op-stream ops
// use it as the op id (control.md §9: op id = request_id).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID is the request_id of the ControlRequest being served, "" when unknown.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
