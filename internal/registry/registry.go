// Package registry serves an in-process OCI distribution registry on
// 127.0.0.1, for tests and for the local run. It speaks the real registry
// protocol (go-containerregistry's pkg/registry), so clients exercise the same
// code paths as against a production registry; content lives in memory and is
// lost when the server closes.
package registry

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
)

// Options configure a Server. The zero value serves anonymously.
type Options struct {
	// Username and Password, when both set, make every request require HTTP
	// basic auth with exactly these credentials (to test auth failures).
	Username string
	Password string
	// Addr is the listen address; empty means 127.0.0.1 on a free port.
	Addr string
	// Middleware, if set, wraps the registry handler (after authentication),
	// e.g. to count or alter requests in tests.
	Middleware func(http.Handler) http.Handler
	// Logger receives one line per request; nil discards them.
	Logger *log.Logger
}

// Server is a running registry. Close it when done.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	once sync.Once
	err  error
	stop func() bool
}

// Start listens and serves until Close is called or ctx is cancelled.
func Start(ctx context.Context, opts Options) (*Server, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry: listen %s: %w", addr, err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	var h http.Handler = ggcr.New(ggcr.Logger(logger), ggcr.WithReferrersSupport(true))
	if opts.Middleware != nil {
		h = opts.Middleware(h)
	}
	if opts.Username != "" && opts.Password != "" {
		h = basicAuth(opts.Username, opts.Password, h)
	}
	s := &Server{
		ln:   ln,
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Printf("registry: serve: %v", err)
		}
	}()
	s.stop = context.AfterFunc(ctx, func() { _ = s.Close() })
	return s, nil
}

// Host is the registry's host:port, as used in references (Host()/repo:tag).
func (s *Server) Host() string { return s.ln.Addr().String() }

// Close stops the server and waits for it to exit. It is safe to call twice.
func (s *Server) Close() error {
	s.once.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		s.err = s.srv.Close()
		<-s.done
	})
	return s.err
}

// basicAuth answers 401 with a Basic challenge, which is what registry
// clients (ORAS, docker) expect before they send credentials.
func basicAuth(user, pass string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if ok && subtle.ConstantTimeCompare([]byte(u), []byte(user)) == 1 &&
			subtle.ConstantTimeCompare([]byte(p), []byte(pass)) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="challfn"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	})
}
