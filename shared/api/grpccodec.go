package api

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// wireMessage is a type of this package that a gRPC peer sends: it knows its
// descriptor and reads itself from the decoded message.
type wireMessage interface {
	Message
	descriptor() protoreflect.MessageDescriptor
	fromProto(protoreflect.Message)
}

// Codec is the gRPC codec of the wire types: the protobuf binary encoding of
// upstream's messages, through the same descriptors as the JSON of the REST
// contract, so a server can take and answer the Go structs of this package
// (Marshal: any Message; Unmarshal: a pointer to one of the request or
// response types). Other proto.Message values go through proto unchanged.
// It implements google.golang.org/grpc/encoding.Codec.
type Codec struct{}

// Name is the content subtype of the default gRPC codec ("application/grpc"
// and "application/grpc+proto" both mean it).
func (Codec) Name() string { return "proto" }

// Marshal encodes v in the protobuf binary format.
func (Codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case Message:
		pm, err := m.toProto()
		if err != nil {
			return nil, err
		}
		return proto.Marshal(pm)
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("api: cannot marshal %T as protobuf", v)
}

// Unmarshal decodes data into v. Unknown fields are ignored, as a generated
// message keeps them aside and upstream never reads them.
func (Codec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case wireMessage:
		dm := dynamicpb.NewMessage(m.descriptor())
		if err := proto.Unmarshal(data, dm); err != nil {
			return err
		}
		m.fromProto(dm)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("api: cannot unmarshal protobuf into %T", v)
}

func (*Challenge) descriptor() protoreflect.MessageDescriptor { return mdChallenge }
func (*Instance) descriptor() protoreflect.MessageDescriptor  { return mdInstance }
func (*CreateChallengeRequest) descriptor() protoreflect.MessageDescriptor {
	return mdCreateChallengeRequest
}
func (*UpdateChallengeRequest) descriptor() protoreflect.MessageDescriptor {
	return mdUpdateChallengeRequest
}
func (*CreateInstanceRequest) descriptor() protoreflect.MessageDescriptor {
	return mdCreateInstanceRequest
}
func (*RenewInstanceRequest) descriptor() protoreflect.MessageDescriptor {
	return mdRenewInstanceRequest
}
func (*RetrieveChallengeRequest) descriptor() protoreflect.MessageDescriptor {
	return mdRetrieveChallengeRequest
}
func (*DeleteChallengeRequest) descriptor() protoreflect.MessageDescriptor {
	return mdDeleteChallengeRequest
}
func (*RetrieveInstanceRequest) descriptor() protoreflect.MessageDescriptor {
	return mdRetrieveInstanceRequest
}
func (*QueryInstanceRequest) descriptor() protoreflect.MessageDescriptor {
	return mdQueryInstanceRequest
}
func (*DeleteInstanceRequest) descriptor() protoreflect.MessageDescriptor {
	return mdDeleteInstanceRequest
}
func (*Empty) descriptor() protoreflect.MessageDescriptor { return mdEmpty }

func (r *RetrieveChallengeRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdRetrieveChallengeRequest)
	setString(m, "id", r.ID)
	return m, nil
}

func (r *RetrieveChallengeRequest) fromProto(m protoreflect.Message) { r.ID = getString(m, "id") }

func (r *DeleteChallengeRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdDeleteChallengeRequest)
	setString(m, "id", r.ID)
	return m, nil
}

func (r *DeleteChallengeRequest) fromProto(m protoreflect.Message) { r.ID = getString(m, "id") }

func (r *RetrieveInstanceRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdRetrieveInstanceRequest)
	setString(m, "challenge_id", r.ChallengeID)
	setString(m, "source_id", r.SourceID)
	return m, nil
}

func (r *RetrieveInstanceRequest) fromProto(m protoreflect.Message) {
	r.ChallengeID = getString(m, "challenge_id")
	r.SourceID = getString(m, "source_id")
}

func (r *QueryInstanceRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdQueryInstanceRequest)
	setString(m, "source_id", r.SourceID)
	return m, nil
}

func (r *QueryInstanceRequest) fromProto(m protoreflect.Message) {
	r.SourceID = getString(m, "source_id")
}

func (r *DeleteInstanceRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdDeleteInstanceRequest)
	setString(m, "challenge_id", r.ChallengeID)
	setString(m, "source_id", r.SourceID)
	return m, nil
}

func (r *DeleteInstanceRequest) fromProto(m protoreflect.Message) {
	r.ChallengeID = getString(m, "challenge_id")
	r.SourceID = getString(m, "source_id")
}

func (*Empty) toProto() (*dynamicpb.Message, error) { return dynamicpb.NewMessage(mdEmpty), nil }

func (*Empty) fromProto(protoreflect.Message) {}
