package instance

import (
	"context"

	"google.golang.org/grpc"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/grpcx"
)

// RegisterGRPC registers upstream's gRPC service api.v1.instance.InstanceManager
// on r, served with svc: each RPC calls the Service method its REST route
// calls, so both transports give the same records and the same errors.
func RegisterGRPC(r grpc.ServiceRegistrar, svc Service) {
	r.RegisterService(&grpc.ServiceDesc{
		ServiceName: api.InstanceManagerService,
		HandlerType: (*Service)(nil),
		Methods: []grpc.MethodDesc{
			grpcx.Unary("CreateInstance", svc.CreateInstance),
			grpcx.Unary("RetrieveInstance", func(ctx context.Context, req *api.RetrieveInstanceRequest) (*api.Instance, error) {
				return svc.RetrieveInstance(ctx, req.ChallengeID, req.SourceID)
			}),
			grpcx.Unary("RenewInstance", func(ctx context.Context, req *api.RenewInstanceRequest) (*api.Instance, error) {
				return svc.RenewInstance(ctx, req.ChallengeID, req.SourceID)
			}),
			grpcx.Unary("DeleteInstance", func(ctx context.Context, req *api.DeleteInstanceRequest) (*api.Empty, error) {
				if err := svc.DeleteInstance(ctx, req.ChallengeID, req.SourceID); err != nil {
					return nil, err
				}
				return &api.Empty{}, nil
			}),
		},
		Streams: []grpc.StreamDesc{
			grpcx.ServerStream("QueryInstance", func(ctx context.Context, req *api.QueryInstanceRequest, send func(*api.Instance) error) error {
				return svc.QueryInstances(ctx, req.SourceID, send)
			}),
		},
		Metadata: "api/v1/instance/instance.proto",
	}, svc)
}
