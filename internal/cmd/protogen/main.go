// Command protogen compiles the module's .proto files and writes the Go code
// protoc-gen-go would, without a system protoc: protocompile parses and links
// the schema, protoc-gen-go's own generator (internal_gengo) emits the code.
//
// Run it through go generate (see proto/agent/generate.go):
//
//	go tool protogen -I . opengeni_agent.proto
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/pluginpb"
)

func main() {
	importPath := flag.String("I", ".", "directory the .proto paths are relative to")
	outDir := flag.String("out", ".", "directory the generated files are written under (paths=source_relative)")
	flag.Parse()
	if err := run(*importPath, *outDir, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run(importPath, outDir string, files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("no .proto files given")
	}
	compiler := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{importPath}}),
		SourceInfoMode: protocompile.SourceInfoStandard, // keeps comments for the generated docs
	}
	linked, err := compiler.Compile(context.Background(), files...)
	if err != nil {
		return err
	}

	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: files,
		Parameter:      proto.String("paths=source_relative"),
	}
	seen := map[string]bool{}
	for _, f := range linked {
		addWithDeps(req, f, seen)
	}

	plugin, err := protogen.Options{}.New(req)
	if err != nil {
		return err
	}
	plugin.SupportedFeatures = internal_gengo.SupportedFeatures
	for _, f := range plugin.Files {
		if f.Generate {
			internal_gengo.GenerateFile(plugin, f)
		}
	}
	resp := plugin.Response()
	if resp.Error != nil {
		return fmt.Errorf("generator: %s", resp.GetError())
	}
	for _, out := range resp.File {
		path := filepath.Join(outDir, out.GetName())
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(out.GetContent()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// addWithDeps appends a file's imports before the file itself, as protoc does.
func addWithDeps(req *pluginpb.CodeGeneratorRequest, fd protoreflect.FileDescriptor, seen map[string]bool) {
	if seen[fd.Path()] {
		return
	}
	seen[fd.Path()] = true
	imports := fd.Imports()
	for i := 0; i < imports.Len(); i++ {
		addWithDeps(req, imports.Get(i).FileDescriptor, seen)
	}
	req.ProtoFile = append(req.ProtoFile, protodesc.ToFileDescriptorProto(fd))
}
