package httpx

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"time"
)

// HealthPath is the health endpoint of every function (docs/contract.md §1.5).
const HealthPath = "/healthcheck"

// Check is one dependency probe of the health endpoint (etcd, ...).
type Check struct {
	Name    string
	Timeout time.Duration
	Probe   func(ctx context.Context) error
}

// Health answers the health endpoint in the shape of upstream's health-go
// body: 200 with status "OK" when every check passes, 503 with status
// "Unavailable" and a failures map otherwise.
func Health(component, version string, checks ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		failures := map[string]string{}
		for _, c := range checks {
			timeout := c.Timeout
			if timeout <= 0 {
				timeout = time.Second
			}
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			if err := c.Probe(ctx); err != nil {
				failures[c.Name] = err.Error()
			}
			cancel()
		}
		var mem runtime.MemStats
		runtime.ReadMemStats(&mem)
		body := map[string]any{
			"status":    "OK",
			"timestamp": time.Now().UTC().Format(time.RFC3339Nano),
			"system": map[string]any{
				"version":            runtime.Version(),
				"goroutines_count":   runtime.NumGoroutine(),
				"total_alloc_bytes":  mem.TotalAlloc,
				"heap_objects_count": mem.HeapObjects,
				"alloc_bytes":        mem.Alloc,
			},
			"component": map[string]string{"name": component, "version": version},
		}
		status := http.StatusOK
		if len(failures) > 0 {
			body["status"] = "Unavailable"
			body["failures"] = failures
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
}
