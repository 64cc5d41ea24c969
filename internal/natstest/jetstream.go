package natstest

import "github.com/nats-io/nats-server/v2/server"

// JetStream enables JetStream with its store under dir (a t.TempDir()).
func JetStream(dir string) Option {
	return func(o *server.Options) {
		o.JetStream = true
		o.StoreDir = dir
	}
}
