package manifests

import (
	"context"
	"errors"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	eventingfeature "knative.dev/eventing/pkg/apis/feature"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	"knative.dev/pkg/apis"
	servingconfig "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// ClusterConfig is the part of the target cluster's configuration that
// changes what works: the data of knative-serving's config-features
// ConfigMap (after our patch is applied), and the Service ports the Gateway
// speaks HTTP/2 cleartext to (after our patch of Knative's ingress Service).
type ClusterConfig struct {
	ServingFeatures map[string]string
	// H2CBackends are "namespace/name:port" of Service ports whose
	// appProtocol is kubernetes.io/h2c.
	H2CBackends []string
}

// LoadH2CPatch reads a strategic-merge patch of a Service (the file the docs
// apply with kubectl patch) and returns its ports whose appProtocol is
// kubernetes.io/h2c, as "namespace/name:port" of the Service it patches.
func LoadH2CPatch(path, namespace, name string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p corev1.Service
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []string
	for _, port := range p.Spec.Ports {
		if port.AppProtocol != nil && *port.AppProtocol == "kubernetes.io/h2c" {
			out = append(out, fmt.Sprintf("%s/%s:%d", namespace, name, port.Port))
		}
	}
	return out, nil
}

// LoadFeaturesPatch reads a merge patch of the form {data: {...}} (the file
// the docs apply with kubectl patch).
func LoadFeaturesPatch(path string) (ClusterConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ClusterConfig{}, err
	}
	var p struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return ClusterConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return ClusterConfig{ServingFeatures: p.Data}, nil
}

// ValidateKnative runs the Knative webhooks' defaulting and validation on
// every Knative object, as a create would, in a cluster configured as cc.
// Objects are defaulted in place (later invariant checks see the values the
// cluster would store).
func ValidateKnative(ctx context.Context, objs []Object, cc ClusterConfig) error {
	feats, err := servingconfig.NewFeaturesConfigFromMap(cc.ServingFeatures)
	if err != nil {
		return fmt.Errorf("serving features: %w", err)
	}
	cfg := servingconfig.FromContextOrDefaults(ctx)
	cfg.Features = feats
	ctx = servingconfig.ToContext(ctx, cfg)
	flags, err := eventingfeature.NewFlagsConfigFromMap(nil)
	if err != nil {
		return fmt.Errorf("eventing features: %w", err)
	}
	ctx = eventingfeature.ToContext(ctx, flags)
	ctx = apis.WithinCreate(ctx)

	type validatable interface {
		SetDefaults(context.Context)
		Validate(context.Context) *apis.FieldError
	}
	var errs []error
	for _, o := range objs {
		var v validatable
		switch t := o.Typed.(type) {
		case *servingv1.Service:
			v = t
		case *eventingv1.Broker:
			v = t
		case *eventingv1.Trigger:
			v = t
		case *sourcesv1.PingSource:
			v = t
		default:
			continue
		}
		v.SetDefaults(ctx)
		if fe := v.Validate(ctx).Filter(apis.ErrorLevel); fe != nil {
			errs = append(errs, fmt.Errorf("%s: knative validation: %w", o, fe))
		}
	}
	return errors.Join(errs...)
}
