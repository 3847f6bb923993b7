package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// gateway is grpc-gateway's default marshaler, the reference implementation
// every test compares against (same options as runtime.NewServeMux()).
var gateway = &runtime.JSONPb{
	MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
	UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
}

// gatewayDecode is what the generated *.pb.gw.go does with a request body.
func gatewayDecode(body []byte, md protoreflect.MessageDescriptor) (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(md)
	if err := gateway.NewDecoder(bytes.NewReader(body)).Decode(m); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return m, nil
}

// assertJSON checks got against want both as parsed JSON and token by token
// (canonical), so the key order of every object is checked too while the
// random whitespace of protojson and encoding/json's HTML escaping are not.
func assertJSON(t testing.TB, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("golden is not JSON: %v\n%s", err, want)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs\n got: %s\nwant: %s", got, want)
	}
	if gc, wc := canon(got), canon([]byte(want)); gc != wc {
		t.Fatalf("key order differs\n got: %s\nwant: %s", gc, wc)
	}
}

// canon re-emits the JSON token stream with one fixed spelling per token.
func canon(b []byte) string {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var sb strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		switch v := tok.(type) {
		case json.Delim:
			sb.WriteString(v.String())
		case string:
			q, _ := json.Marshal(v)
			sb.Write(q)
		default:
			fmt.Fprint(&sb, v)
		}
		sb.WriteByte(' ')
	}
	return sb.String()
}

// plain undoes protobuf-go's deliberate error-text instability (a
// non-breaking space after "proto:" at random) for comparisons with goldens.
func plain(s string) string { return strings.ReplaceAll(s, "\u00a0", " ") }

func protoNumber(s UpdateStrategy) protoreflect.EnumNumber { return protoreflect.EnumNumber(s) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
