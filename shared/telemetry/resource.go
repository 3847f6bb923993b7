package telemetry

import (
	"context"
	"errors"
	"log/slog"

	"github.com/google/uuid"
	"go.opentelemetry.io/contrib/detectors/gcp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
)

// AttrKnativeConfiguration carries K_CONFIGURATION (Knative and Cloud Run set
// it); there is no semantic-convention key for it.
const AttrKnativeConfiguration = attribute.Key("knative.configuration.name")

// buildResource names this function instance. Precedence, lowest first: our
// defaults (service.name, a fresh service.instance.id, service.version, faas.*
// from K_SERVICE/K_REVISION), then the GCP detector when enabled, then
// OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES. A unique service.instance.id
// matters: cumulative series from two instances of one service must not merge.
func buildResource(ctx context.Context, serviceName, version string, getenv func(string) string, gcpDetector bool, log *slog.Logger) *resource.Resource {
	id := uuid.NewString()
	attrs := []attribute.KeyValue{
		semconv.ServiceName(serviceName),
		semconv.ServiceInstanceID(id),
	}
	if version != "" {
		attrs = append(attrs, semconv.ServiceVersion(version))
	}
	if v := getenv("K_SERVICE"); v != "" {
		attrs = append(attrs, semconv.FaaSName(v), semconv.FaaSInstance(id))
	}
	if v := getenv("K_REVISION"); v != "" {
		attrs = append(attrs, semconv.FaaSVersion(v))
	}
	if v := getenv("K_CONFIGURATION"); v != "" {
		attrs = append(attrs, AttrKnativeConfiguration.String(v))
	}

	opts := []resource.Option{resource.WithAttributes(attrs...)}
	if gcpDetector {
		// Not keyed on K_SERVICE: Knative sets it too, and off GCP the detector
		// probes the metadata server.
		opts = append(opts, resource.WithDetectors(gcp.NewDetector()))
	}
	opts = append(opts, resource.WithFromEnv(), resource.WithTelemetrySDK())

	res, err := resource.New(ctx, opts...)
	if err != nil {
		// A partial resource or a schema-URL conflict still names the service
		// correctly; telemetry must not stop a function from starting.
		log.WarnContext(ctx, "telemetry resource incomplete", slog.String("error", err.Error()))
		if res == nil || (!errors.Is(err, resource.ErrPartialResource) && !errors.Is(err, resource.ErrSchemaURLConflict)) {
			res = resource.NewSchemaless(attrs...)
		}
	}
	return res
}
