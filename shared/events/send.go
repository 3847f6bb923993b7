package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// NewSender returns the sender for a sink URL:
//
//   - http://… or https://…: binary-mode CloudEvents POSTed to that address (a
//     Knative Broker, a Knative Service, or the local run's functions);
//   - pubsub://projects/P/topics/T: published to a Pub/Sub topic (Cloud Run,
//     delivered by a push subscription or Eventarc). PUBSUB_EMULATOR_HOST is
//     honoured, as with Google's client libraries.
//
// client is used for HTTP (nil = http.DefaultClient); callers pass an
// instrumented client (otelhttp) to get client spans.
func NewSender(sink string, client *http.Client) (Sender, error) {
	if client == nil {
		client = http.DefaultClient
	}
	u, err := url.Parse(sink)
	if err != nil {
		return nil, fmt.Errorf("events sink %q: %w", sink, err)
	}
	switch u.Scheme {
	case "http", "https":
		return &httpSender{target: sink, client: client}, nil
	case "mem":
		return &InProcess{}, nil
	case "pubsub":
		topic := strings.TrimPrefix(u.Host+u.Path, "/")
		parts := strings.Split(topic, "/")
		if len(parts) != 4 || parts[0] != "projects" || parts[2] != "topics" || parts[1] == "" || parts[3] == "" {
			return nil, fmt.Errorf("events sink %q: want pubsub://projects/PROJECT/topics/TOPIC", sink)
		}
		p := &pubsubSender{topic: topic, client: client, base: "https://pubsub.googleapis.com", token: metadataToken}
		if host := os.Getenv("PUBSUB_EMULATOR_HOST"); host != "" {
			p.base, p.token = "http://"+host, nil
		}
		return p, nil
	}
	return nil, fmt.Errorf("events sink %q: unsupported scheme (want http, https, pubsub or mem)", sink)
}

type httpSender struct {
	target string
	client *http.Client
}

// Send posts e in binary mode: attributes as ce-* headers, data as the body,
// the encoding Knative brokers and Eventarc use.
func (s *httpSender) Send(ctx context.Context, e cloudevents.Event) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.target, nil)
	if err != nil {
		return err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		return fmt.Errorf("encode event %s: %w", e.ID(), err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("send event %s to %s: %w", e.Type(), s.target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("send event %s to %s: %s: %s", e.Type(), s.target, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

type pubsubSender struct {
	topic  string
	base   string
	client *http.Client
	token  func(ctx context.Context, c *http.Client) (string, error)
}

// Send publishes e as one Pub/Sub message following the CloudEvents Pub/Sub
// binding in binary mode: attributes ce-*, data = the event data.
func (s *pubsubSender) Send(ctx context.Context, e cloudevents.Event) error {
	attrs := map[string]string{
		"ce-specversion": e.SpecVersion(),
		"ce-id":          e.ID(),
		"ce-source":      e.Source(),
		"ce-type":        e.Type(),
		"content-type":   e.DataContentType(),
	}
	if !e.Time().IsZero() {
		attrs["ce-time"] = e.Time().Format(time.RFC3339Nano)
	}
	for k, v := range e.Extensions() {
		attrs["ce-"+k] = fmt.Sprint(v)
	}
	body, err := json.Marshal(map[string]any{
		"messages": []map[string]any{{"data": e.Data(), "attributes": attrs}},
	})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/"+s.topic+":publish", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.token != nil {
		tok, err := s.token(ctx, s.client)
		if err != nil {
			return fmt.Errorf("pubsub token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("publish event %s to %s: %w", e.Type(), s.topic, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("publish event %s to %s: %s: %s", e.Type(), s.topic, resp.Status, strings.TrimSpace(string(out)))
	}
	return nil
}

// metadataToken gets an OAuth token for the function's service account from
// the metadata server (Cloud Run), the way Google's client libraries do.
func metadataToken(ctx context.Context, c *http.Client) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return "", err
	}
	if tok.AccessToken == "" {
		return "", errors.New("metadata server returned no access token")
	}
	return tok.AccessToken, nil
}
