module github.com/opengeni/opengeni-agent

go 1.26.0

require (
	github.com/bufbuild/protocompile v0.14.1
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/sync v0.19.0 // indirect
)

tool (
	github.com/opengeni/opengeni-agent/internal/cmd/protogen
	google.golang.org/protobuf/cmd/protoc-gen-go
)
