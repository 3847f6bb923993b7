package main

import (
	"reflect"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// A copy of scenarios/example-tcp/service.go: a hand-written SDK for the one resource of the challfn-local provider
// (providers/challfn-local): what a generated SDK would hold, kept in the scenario so that
// the scenario stays a self-contained module (it is pushed to a registry on its own).

// providerVersion must match the provider's: the engine then uses the plugin found on PATH
// and never tries to download one.
const providerVersion = "0.1.0"

// Service is a TCP service on 127.0.0.1 answering every connection with Flag.
type Service struct {
	pulumi.CustomResourceState

	Flag pulumi.StringOutput `pulumi:"flag"`
	Host pulumi.StringOutput `pulumi:"host"`
	Port pulumi.IntOutput    `pulumi:"port"`
	Pid  pulumi.IntOutput    `pulumi:"pid"`
}

// ServiceArgs are the inputs of a Service.
type ServiceArgs struct {
	// Flag is the line sent to every connection.
	Flag pulumi.StringInput
	// Port to listen on; nil or 0 picks a free port.
	Port pulumi.IntPtrInput
}

type serviceArgs struct {
	Flag string `pulumi:"flag"`
	Port *int   `pulumi:"port"`
}

func (ServiceArgs) ElementType() reflect.Type { return reflect.TypeOf((*serviceArgs)(nil)).Elem() }

// NewService registers a Service.
func NewService(ctx *pulumi.Context, name string, args *ServiceArgs, opts ...pulumi.ResourceOption) (*Service, error) {
	var svc Service
	opts = append([]pulumi.ResourceOption{pulumi.Version(providerVersion)}, opts...)
	if err := ctx.RegisterResource("challfn-local:index:Service", name, args, &svc, opts...); err != nil {
		return nil, err
	}
	return &svc, nil
}
