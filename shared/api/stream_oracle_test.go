package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/challfn/challfn/shared/apierr"
)

// Our Stream against grpc-gateway's own runtime.ForwardResponseStream fed
// with the same items and the same google.rpc.Status.
func TestStreamMatchesGateway(t *testing.T) {
	items := []Message{fullChallenge(), &Challenge{ID: "2", Scenario: "<s>"}}
	tests := []struct {
		name  string
		items []Message
		fail  *apierr.Error
	}{
		{"empty", nil, nil},
		{"two items", items, nil},
		{"error only", nil, apierr.Internal()},
		{"items then error", items, apierr.Internal()},
		{"canceled", nil, apierr.Canceled()},
		{"not found", nil, apierr.ChallengeNotFound("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ours := httptest.NewRecorder()
			s := NewStream(ours)
			for _, m := range tt.items {
				if err := s.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			if tt.fail != nil {
				s.Fail(tt.fail)
			}

			ref := httptest.NewRecorder()
			i := 0
			recv := func() (proto.Message, error) {
				if i < len(tt.items) {
					pm, err := protoOf(tt.items[i])
					i++
					return pm, err
				}
				if tt.fail != nil {
					return nil, status.ErrorProto(tt.fail.Proto())
				}
				return nil, io.EOF
			}
			ctx := runtime.NewServerMetadataContext(context.Background(), runtime.ServerMetadata{})
			req := httptest.NewRequest(http.MethodGet, "/api/v1/challenge", nil)
			runtime.ForwardResponseStream(ctx, runtime.NewServeMux(), gateway, ref, req, recv)

			if ours.Code != ref.Code {
				t.Fatalf("status ours %d, gateway %d", ours.Code, ref.Code)
			}
			for _, h := range []string{"Content-Type", "Transfer-Encoding"} {
				if ours.Header().Get(h) != ref.Header().Get(h) {
					t.Fatalf("%s ours %q, gateway %q", h, ours.Header().Get(h), ref.Header().Get(h))
				}
			}
			ol := strings.Split(ours.Body.String(), "\n")
			rl := strings.Split(ref.Body.String(), "\n")
			if len(ol) != len(rl) {
				t.Fatalf("lines ours %q, gateway %q", ours.Body, ref.Body)
			}
			for k := range ol {
				if ol[k] == "" && rl[k] == "" {
					continue
				}
				assertJSON(t, []byte(ol[k]), rl[k])
			}
		})
	}
}
