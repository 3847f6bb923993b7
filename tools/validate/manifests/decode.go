// Package manifests validates the Knative/Kubernetes manifests of challfn
// offline: strict decoding into the upstream Go types, Knative's own
// SetDefaults + Validate, and the project's invariants (invariants.go).
package manifests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"
)

// Object is one decoded document.
type Object struct {
	Source    string // file (or overlay) and document index, for messages
	Kind      string // apiVersion + "/" + kind, e.g. "serving.knative.dev/v1/Service"
	Name      string
	Namespace string
	Typed     any // pointer to the upstream Go type
}

func (o Object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.Kind, o.Namespace, o.Name, o.Source)
}

// kinds lists every kind the deployment may contain. A kind not listed is an
// error: a typo in apiVersion or kind must not silently skip validation.
var kinds = map[string]func() any{
	"v1/Namespace":                                     func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                                     func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                        func() any { return &corev1.Secret{} },
	"v1/Service":                                       func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                                func() any { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":                         func() any { return &corev1.PersistentVolumeClaim{} },
	"apps/v1/Deployment":                               func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                              func() any { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":                                func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                                     func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                                 func() any { return &batchv1.CronJob{} },
	"policy/v1/PodDisruptionBudget":                    func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":               func() any { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":                     func() any { return &networkingv1.Ingress{} },
	"rbac.authorization.k8s.io/v1/Role":                func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":         func() any { return &rbacv1.RoleBinding{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":         func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding":  func() any { return &rbacv1.ClusterRoleBinding{} },
	"serving.knative.dev/v1/Service":                   func() any { return &servingv1.Service{} },
	"eventing.knative.dev/v1/Broker":                   func() any { return &eventingv1.Broker{} },
	"eventing.knative.dev/v1/Trigger":                  func() any { return &eventingv1.Trigger{} },
	"sources.knative.dev/v1/PingSource":                func() any { return &sourcesv1.PingSource{} },
	"gateway.networking.k8s.io/v1/Gateway":             func() any { return &gatewayv1.Gateway{} },
	"gateway.networking.k8s.io/v1/HTTPRoute":           func() any { return &gatewayv1.HTTPRoute{} },
	"gateway.networking.k8s.io/v1beta1/ReferenceGrant": func() any { return &gatewayv1beta1.ReferenceGrant{} },
}

// SplitDocuments splits a multi-document YAML stream, dropping empty
// documents (comments only).
func SplitDocuments(data []byte) ([][]byte, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var docs [][]byte
	for {
		var n yamlv3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("yaml document %d: %w", len(docs), err)
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yamlv3.ScalarNode && n.Content[0].Tag == "!!null") {
			continue
		}
		out, err := yamlv3.Marshal(&n)
		if err != nil {
			return nil, fmt.Errorf("yaml document %d: %w", len(docs), err)
		}
		docs = append(docs, out)
	}
}

// Decode strictly decodes every document of a YAML stream: unknown or
// duplicated fields and unknown kinds are errors.
func Decode(source string, data []byte) ([]Object, error) {
	docs, err := SplitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	var objs []Object
	var errs []error
	for i, doc := range docs {
		o, err := decodeOne(fmt.Sprintf("%s#%d", source, i), doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o)
	}
	return objs, errors.Join(errs...)
}

func decodeOne(source string, doc []byte) (Object, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return Object{}, fmt.Errorf("%s: %w", source, err)
	}
	key := head.APIVersion + "/" + head.Kind
	newT, ok := kinds[key]
	if !ok {
		return Object{}, fmt.Errorf("%s: unknown kind %q (apiVersion %q)", source, head.Kind, head.APIVersion)
	}
	if head.Metadata.Name == "" {
		return Object{}, fmt.Errorf("%s: %s without metadata.name", source, key)
	}
	typed := newT()
	if err := yaml.UnmarshalStrict(doc, typed); err != nil {
		return Object{}, fmt.Errorf("%s: %s %s: %w", source, key, head.Metadata.Name, err)
	}
	return Object{
		Source:    source,
		Kind:      key,
		Name:      head.Metadata.Name,
		Namespace: head.Metadata.Namespace,
		Typed:     typed,
	}, nil
}

// Find returns the objects of one kind (apiVersion/kind key).
func Find[T any](objs []Object) []T {
	var out []T
	for _, o := range objs {
		if t, ok := o.Typed.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}
