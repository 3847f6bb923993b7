package tools

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ctfer-io/chall-manager/api/v1/challenge"
	"github.com/ctfer-io/chall-manager/api/v1/instance"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/google/go-cmp/cmp"
)

// challfn builds its wire messages and gRPC services at run time from
// descriptors written by hand (shared/api/descriptors.go, pinned by
// shared/api/testdata/descriptors.txtpb). This test compares them with the
// descriptors compiled into chall-manager v0.6.6's generated code: every
// package, message, field (name, number, type, label, proto3 optional),
// map entry, enum value, service, method and streaming flag must be the
// same. Options that do not reach the wire (OpenAPI annotations, field
// behaviours, deprecation, json_name) and imports are left out.
func TestDescriptorsMatchUpstream(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "shared", "api", "testdata", "descriptors.txtpb"))
	if err != nil {
		t.Fatal(err)
	}
	ours := &descriptorpb.FileDescriptorSet{}
	if err := prototext.Unmarshal(b, ours); err != nil {
		t.Fatal(err)
	}
	upstream := map[string]protoreflect.FileDescriptor{
		"api/v1/instance/instance.proto":   instance.File_api_v1_instance_instance_proto,
		"api/v1/challenge/challenge.proto": challenge.File_api_v1_challenge_challenge_proto,
	}
	if len(ours.File) != len(upstream) {
		t.Fatalf("%d files, want %d", len(ours.File), len(upstream))
	}
	for _, f := range ours.File {
		up, ok := upstream[f.GetName()]
		if !ok {
			t.Fatalf("upstream has no file %s", f.GetName())
		}
		want := wireOnly(protodesc.ToFileDescriptorProto(up))
		got := wireOnly(f)
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("%s differs from upstream v0.6.6 (-upstream +challfn):\n%s", f.GetName(), diff)
		}
		if len(got.GetService()) != 1 || len(got.GetService()[0].GetMethod()) != 5 {
			t.Errorf("%s: services %v", f.GetName(), got.GetService())
		}
	}
}

// wireOnly keeps what decides the protobuf binary and JSON encodings and the
// gRPC method names.
func wireOnly(f *descriptorpb.FileDescriptorProto) *descriptorpb.FileDescriptorProto {
	f = proto.Clone(f).(*descriptorpb.FileDescriptorProto)
	f.Dependency, f.PublicDependency, f.WeakDependency = nil, nil, nil
	f.Options, f.SourceCodeInfo = nil, nil
	var msg func(m *descriptorpb.DescriptorProto)
	msg = func(m *descriptorpb.DescriptorProto) {
		mapEntry := m.GetOptions().GetMapEntry()
		m.Options = nil
		if mapEntry {
			m.Options = &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)}
		}
		for _, fd := range m.Field {
			fd.JsonName, fd.Options = nil, nil
		}
		for _, o := range m.OneofDecl {
			o.Options = nil
		}
		for _, n := range m.NestedType {
			msg(n)
		}
		for _, e := range m.EnumType {
			enum(e)
		}
	}
	for _, m := range f.MessageType {
		msg(m)
	}
	for _, e := range f.EnumType {
		enum(e)
	}
	for _, s := range f.Service {
		s.Options = nil
		for _, m := range s.Method {
			m.Options = nil
			if !m.GetClientStreaming() {
				m.ClientStreaming = nil
			}
			if !m.GetServerStreaming() {
				m.ServerStreaming = nil
			}
		}
	}
	return f
}

func enum(e *descriptorpb.EnumDescriptorProto) {
	e.Options = nil
	for _, v := range e.Value {
		v.Options = nil
	}
}
