package challenge

import (
	"context"

	"google.golang.org/grpc"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/grpcx"
)

// RegisterGRPC registers upstream's gRPC service api.v1.challenge.ChallengeStore
// on r, served with svc: each RPC calls the Service method its REST route
// calls, so both transports give the same records and the same errors.
func RegisterGRPC(r grpc.ServiceRegistrar, svc Service) {
	r.RegisterService(&grpc.ServiceDesc{
		ServiceName: api.ChallengeStoreService,
		HandlerType: (*Service)(nil),
		Methods: []grpc.MethodDesc{
			grpcx.Unary("CreateChallenge", svc.CreateChallenge),
			grpcx.Unary("RetrieveChallenge", func(ctx context.Context, req *api.RetrieveChallengeRequest) (*api.Challenge, error) {
				return svc.RetrieveChallenge(ctx, req.ID)
			}),
			grpcx.Unary("UpdateChallenge", svc.UpdateChallenge),
			grpcx.Unary("DeleteChallenge", func(ctx context.Context, req *api.DeleteChallengeRequest) (*api.Empty, error) {
				if err := svc.DeleteChallenge(ctx, req.ID); err != nil {
					return nil, err
				}
				return &api.Empty{}, nil
			}),
		},
		Streams: []grpc.StreamDesc{
			grpcx.ServerStream("QueryChallenge", func(ctx context.Context, _ *api.Empty, send func(*api.Challenge) error) error {
				return svc.QueryChallenges(ctx, send)
			}),
		},
		Metadata: "api/v1/challenge/challenge.proto",
	}, svc)
}
