// Package agentpb holds the generated Go types of the OpenGeni wire contract
// (opengeni_agent.proto, package opengeni.agent.v1).
//
// Regenerate with `go generate ./proto/...`; it needs no system protoc.
package agentpb

//go:generate go tool protogen -I . opengeni_agent.proto
