package etcd

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestClassify(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	other := errors.New("etcdserver: key not found")
	tests := []struct {
		name        string
		parent, ctx context.Context
		err         error
		unavailable bool
	}{
		{"nil", live, live, nil, false},
		{"own deadline passed", live, done, context.DeadlineExceeded, true},
		{"caller gave up", done, done, context.Canceled, false},
		{"server timed out (no quorum)", live, live, status.Error(codes.Unknown, "context deadline exceeded"), true},
		{"server deadline code", live, live, status.Error(codes.DeadlineExceeded, "whatever"), true},
		{"server timed out, caller gone", done, live, status.Error(codes.Unknown, "context deadline exceeded"), false},
		{"other unknown", live, live, status.Error(codes.Unknown, "boom"), false},
		{"plain error", live, live, other, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.parent, tt.ctx, tt.err)
			if errors.Is(got, ErrUnavailable) != tt.unavailable {
				t.Fatalf("classify(%v) = %v, unavailable want %v", tt.err, got, tt.unavailable)
			}
			if !errors.Is(got, tt.err) {
				t.Fatalf("classify lost the cause: %v", got)
			}
		})
	}
}
