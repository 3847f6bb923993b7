package api

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The wire messages and services are upstream's api/v1/{instance,challenge}.proto
// (same packages, names, numbers, declaration order, proto3 `optional`s,
// methods and streaming), built at run time so protojson itself decides
// every accepted input form, every output form and every error text, and the
// protobuf binary encoding of the gRPC services follows from the same
// descriptors, with no generated code to maintain. Declaration order matters:
// protojson writes fields in that order. tools/chall-manager's test compares
// these descriptors with upstream's generated ones.

type fieldOpt func(*descriptorpb.FieldDescriptorProto)

func optional(oneof int32) fieldOpt {
	return func(f *descriptorpb.FieldDescriptorProto) {
		f.Proto3Optional = proto.Bool(true)
		f.OneofIndex = proto.Int32(oneof)
	}
}

func repeated(f *descriptorpb.FieldDescriptorProto) {
	f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
}

func fld(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string, opts ...fieldOpt) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{
		Name:   proto.String(name),
		Number: proto.Int32(num),
		Label:  descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		Type:   typ.Enum(),
	}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

func str(name string, num int32, opts ...fieldOpt) *descriptorpb.FieldDescriptorProto {
	return fld(name, num, descriptorpb.FieldDescriptorProto_TYPE_STRING, "", opts...)
}

func i64(name string, num int32) *descriptorpb.FieldDescriptorProto {
	return fld(name, num, descriptorpb.FieldDescriptorProto_TYPE_INT64, "")
}

func msg(name string, num int32, typeName string, opts ...fieldOpt) *descriptorpb.FieldDescriptorProto {
	return fld(name, num, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, typeName, opts...)
}

// stringMap returns the map<string,string> field and its synthetic entry message.
func stringMap(parent, name string, num int32) (*descriptorpb.FieldDescriptorProto, *descriptorpb.DescriptorProto) {
	entry := &descriptorpb.DescriptorProto{
		Name:    proto.String("AdditionalEntry"),
		Field:   []*descriptorpb.FieldDescriptorProto{str("key", 1), str("value", 2)},
		Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
	}
	f := msg(name, num, parent+".AdditionalEntry", repeated)
	return f, entry
}

func message(pkg, name string, oneofs []string, build func(full string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto)) *descriptorpb.DescriptorProto {
	full := "." + pkg + "." + name
	fields, nested := build(full)
	m := &descriptorpb.DescriptorProto{Name: proto.String(name), Field: fields, NestedType: nested}
	for _, o := range oneofs {
		m.OneofDecl = append(m.OneofDecl, &descriptorpb.OneofDescriptorProto{Name: proto.String(o)})
	}
	return m
}

// rpc describes one method; stream marks a server-streaming one.
func rpc(name, in, out string, stream bool) *descriptorpb.MethodDescriptorProto {
	m := &descriptorpb.MethodDescriptorProto{Name: proto.String(name), InputType: proto.String(in), OutputType: proto.String(out)}
	if stream {
		m.ServerStreaming = proto.Bool(true)
	}
	return m
}

const (
	emType = ".google.protobuf.Empty"
	tsType = ".google.protobuf.Timestamp"
	duType = ".google.protobuf.Duration"
	fmType = ".google.protobuf.FieldMask"
)

func instanceFile() *descriptorpb.FileDescriptorProto {
	const pkg = "api.v1.instance"
	idPair := func(string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
		return []*descriptorpb.FieldDescriptorProto{str("challenge_id", 1), str("source_id", 2)}, nil
	}
	return &descriptorpb.FileDescriptorProto{
		Name:       proto.String("api/v1/instance/instance.proto"),
		Package:    proto.String(pkg),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/empty.proto", "google/protobuf/timestamp.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("InstanceManager"),
			Method: []*descriptorpb.MethodDescriptorProto{
				rpc("CreateInstance", "."+pkg+".CreateInstanceRequest", "."+pkg+".Instance", false),
				rpc("RetrieveInstance", "."+pkg+".RetrieveInstanceRequest", "."+pkg+".Instance", false),
				rpc("QueryInstance", "."+pkg+".QueryInstanceRequest", "."+pkg+".Instance", true),
				rpc("RenewInstance", "."+pkg+".RenewInstanceRequest", "."+pkg+".Instance", false),
				rpc("DeleteInstance", "."+pkg+".DeleteInstanceRequest", emType, false),
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{
			message(pkg, "CreateInstanceRequest", nil, func(full string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
				add, entry := stringMap(full, "additional", 3)
				return []*descriptorpb.FieldDescriptorProto{str("challenge_id", 1), str("source_id", 2), add},
					[]*descriptorpb.DescriptorProto{entry}
			}),
			message(pkg, "RetrieveInstanceRequest", nil, idPair),
			message(pkg, "QueryInstanceRequest", nil, func(string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
				return []*descriptorpb.FieldDescriptorProto{str("source_id", 1)}, nil
			}),
			message(pkg, "RenewInstanceRequest", nil, idPair),
			message(pkg, "DeleteInstanceRequest", nil, idPair),
			message(pkg, "Instance", []string{"_until", "_flag"}, func(full string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
				add, entry := stringMap(full, "additional", 8)
				flags := str("flags", 9, repeated)
				return []*descriptorpb.FieldDescriptorProto{
					str("challenge_id", 1),
					str("source_id", 2),
					msg("since", 3, tsType),
					msg("last_renew", 4, tsType),
					msg("until", 5, tsType, optional(0)),
					str("connection_info", 6),
					str("flag", 7, optional(1)),
					flags,
					add,
				}, []*descriptorpb.DescriptorProto{entry}
			}),
		},
	}
}

func challengeFile() *descriptorpb.FileDescriptorProto {
	const pkg = "api.v1.challenge"
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("api/v1/challenge/challenge.proto"),
		Package: proto.String(pkg),
		Syntax:  proto.String("proto3"),
		Dependency: []string{
			"google/protobuf/duration.proto",
			"google/protobuf/empty.proto",
			"google/protobuf/field_mask.proto",
			"google/protobuf/timestamp.proto",
			"api/v1/instance/instance.proto",
		},
		MessageType: []*descriptorpb.DescriptorProto{
			message(pkg, "CreateChallengeRequest", nil, func(full string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
				add, entry := stringMap(full, "additional", 6)
				return []*descriptorpb.FieldDescriptorProto{
					str("id", 1), str("scenario", 2), msg("timeout", 4, duType), msg("until", 5, tsType), add, i64("min", 7), i64("max", 8),
				}, []*descriptorpb.DescriptorProto{entry}
			}),
			message(pkg, "RetrieveChallengeRequest", nil, func(string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
				return []*descriptorpb.FieldDescriptorProto{str("id", 1)}, nil
			}),
			message(pkg, "UpdateChallengeRequest", []string{"_scenario", "_update_strategy"}, func(full string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
				add, entry := stringMap(full, "additional", 7)
				return []*descriptorpb.FieldDescriptorProto{
					str("id", 1),
					str("scenario", 2, optional(0)),
					fld("update_strategy", 3, descriptorpb.FieldDescriptorProto_TYPE_ENUM, "."+pkg+".UpdateStrategy", optional(1)),
					msg("timeout", 4, duType),
					msg("until", 5, tsType),
					msg("update_mask", 6, fmType),
					add,
					i64("min", 8),
					i64("max", 9),
				}, []*descriptorpb.DescriptorProto{entry}
			}),
			message(pkg, "DeleteChallengeRequest", nil, func(string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
				return []*descriptorpb.FieldDescriptorProto{str("id", 1)}, nil
			}),
			message(pkg, "Challenge", nil, func(full string) ([]*descriptorpb.FieldDescriptorProto, []*descriptorpb.DescriptorProto) {
				add, entry := stringMap(full, "additional", 6)
				return []*descriptorpb.FieldDescriptorProto{
					str("id", 1), str("scenario", 2), msg("timeout", 3, duType), msg("until", 4, tsType),
					msg("instances", 5, ".api.v1.instance.Instance", repeated), add, i64("min", 7), i64("max", 8),
				}, []*descriptorpb.DescriptorProto{entry}
			}),
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("ChallengeStore"),
			Method: []*descriptorpb.MethodDescriptorProto{
				rpc("CreateChallenge", "."+pkg+".CreateChallengeRequest", "."+pkg+".Challenge", false),
				rpc("RetrieveChallenge", "."+pkg+".RetrieveChallengeRequest", "."+pkg+".Challenge", false),
				rpc("QueryChallenge", emType, "."+pkg+".Challenge", true),
				rpc("UpdateChallenge", "."+pkg+".UpdateChallengeRequest", "."+pkg+".Challenge", false),
				rpc("DeleteChallenge", "."+pkg+".DeleteChallengeRequest", emType, false),
			},
		}},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("UpdateStrategy"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("update_in_place"), Number: proto.Int32(0)},
				{Name: proto.String("blue_green"), Number: proto.Int32(1)},
				{Name: proto.String("recreate"), Number: proto.Int32(2)},
			},
		}},
	}
}

// Descriptors of the wire messages.
var (
	mdChallenge                protoreflect.MessageDescriptor
	mdInstance                 protoreflect.MessageDescriptor
	mdCreateChallengeRequest   protoreflect.MessageDescriptor
	mdRetrieveChallengeRequest protoreflect.MessageDescriptor
	mdUpdateChallengeRequest   protoreflect.MessageDescriptor
	mdDeleteChallengeRequest   protoreflect.MessageDescriptor
	mdCreateInstanceRequest    protoreflect.MessageDescriptor
	mdRetrieveInstanceRequest  protoreflect.MessageDescriptor
	mdRenewInstanceRequest     protoreflect.MessageDescriptor
	mdQueryInstanceRequest     protoreflect.MessageDescriptor
	mdDeleteInstanceRequest    protoreflect.MessageDescriptor
	mdEmpty                    protoreflect.MessageDescriptor
	edUpdateStrategy           protoreflect.EnumDescriptor
)

// Full names of the two gRPC services.
const (
	ChallengeStoreService  = "api.v1.challenge.ChallengeStore"
	InstanceManagerService = "api.v1.instance.InstanceManager"
)

// Files returns the descriptors of upstream's challenge.proto and
// instance.proto (for the comparison with upstream's generated code, and for
// clients such as server reflection that need the schema).
func Files() []protoreflect.FileDescriptor {
	var out []protoreflect.FileDescriptor
	for _, p := range []string{"api/v1/instance/instance.proto", "api/v1/challenge/challenge.proto"} {
		fd, err := files.FindFileByPath(p)
		if err != nil {
			panic(fmt.Sprintf("api: %s: %v", p, err))
		}
		out = append(out, fd)
	}
	return out
}

// files is a registry holding the two wire files and the well-known types they
// import. Tests use it to compare against grpc-gateway's own marshaler.
var files = buildFiles()

func buildFiles() *protoregistry.Files {
	files := new(protoregistry.Files)
	for _, fd := range []protoreflect.FileDescriptor{
		durationpb.File_google_protobuf_duration_proto,
		emptypb.File_google_protobuf_empty_proto,
		fieldmaskpb.File_google_protobuf_field_mask_proto,
		timestamppb.File_google_protobuf_timestamp_proto,
	} {
		if err := files.RegisterFile(fd); err != nil {
			panic(fmt.Sprintf("api: registering %s: %v", fd.Path(), err))
		}
	}
	for _, fdp := range []*descriptorpb.FileDescriptorProto{instanceFile(), challengeFile()} {
		fd, err := protodesc.NewFile(fdp, files)
		if err != nil {
			panic(fmt.Sprintf("api: building %s: %v", fdp.GetName(), err))
		}
		if err := files.RegisterFile(fd); err != nil {
			panic(fmt.Sprintf("api: registering %s: %v", fdp.GetName(), err))
		}
	}
	find := func(name string) protoreflect.MessageDescriptor {
		d, err := files.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			panic(fmt.Sprintf("api: %s: %v", name, err))
		}
		return d.(protoreflect.MessageDescriptor)
	}
	mdChallenge = find("api.v1.challenge.Challenge")
	mdCreateChallengeRequest = find("api.v1.challenge.CreateChallengeRequest")
	mdRetrieveChallengeRequest = find("api.v1.challenge.RetrieveChallengeRequest")
	mdUpdateChallengeRequest = find("api.v1.challenge.UpdateChallengeRequest")
	mdDeleteChallengeRequest = find("api.v1.challenge.DeleteChallengeRequest")
	mdInstance = find("api.v1.instance.Instance")
	mdCreateInstanceRequest = find("api.v1.instance.CreateInstanceRequest")
	mdRetrieveInstanceRequest = find("api.v1.instance.RetrieveInstanceRequest")
	mdRenewInstanceRequest = find("api.v1.instance.RenewInstanceRequest")
	mdQueryInstanceRequest = find("api.v1.instance.QueryInstanceRequest")
	mdDeleteInstanceRequest = find("api.v1.instance.DeleteInstanceRequest")
	mdEmpty = find("google.protobuf.Empty")
	ed, err := files.FindDescriptorByName("api.v1.challenge.UpdateStrategy")
	if err != nil {
		panic(fmt.Sprintf("api: UpdateStrategy: %v", err))
	}
	edUpdateStrategy = ed.(protoreflect.EnumDescriptor)
	return files
}
