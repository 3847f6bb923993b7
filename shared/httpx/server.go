package httpx

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/challfn/challfn/shared/apierr"
)

// Server returns the http.Server every challfn entry point listens with:
// HTTP/1.1 and HTTP/2 cleartext (h2c, prior knowledge) on the same port,
// because gRPC clients speak h2c and Knative's queue-proxy and Cloud Run
// forward HTTP/2 to a port named h2c, while REST clients speak HTTP/1.1.
//
// Every read has a deadline: the headers within 10 s, the body within the
// time api.DecodeBody gives it, an idle connection closed after 2 minutes.
// There is no write deadline: a PATCH may wait for its updates for 540 s.
// Serve it with Serve, so that the answers Go's server gives by itself are in
// the contract's shape too.
func Server(h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: h, Protocols: &p, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
}

// Serve serves srv on l (see JSONErrors).
func Serve(srv *http.Server, l net.Listener) error { return srv.Serve(JSONErrors(l)) }

// JSONErrors wraps l so that the answers Go's HTTP server writes before any
// handler runs (a request line it cannot parse, such as a bad %-escape in the
// path; headers too large; an unsupported transfer encoding), which are plain
// text, go out in the contract's JSON error shape (docs/contract.md §2) with
// their status: clients parse every error body. They are the only writes
// that start with a status line followed directly by Go's fixed
// "text/plain ... Connection: close" headers; every handler's answer has a
// Date header and goes out unchanged.
func JSONErrors(l net.Listener) net.Listener { return jsonListener{l} }

type jsonListener struct{ net.Listener }

func (l jsonListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return jsonConn{c}, nil
}

type jsonConn struct{ net.Conn }

// preRoutingHeaders are what net/http writes after the status line of its
// own error answers (server.go, errorHeaders).
const preRoutingHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c jsonConn) Write(b []byte) (int, error) {
	out, ok := jsonPreRouting(b)
	if !ok {
		return c.Conn.Write(b)
	}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// jsonPreRouting rewrites one of net/http's own error answers; ok false for
// anything else.
func jsonPreRouting(b []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(b, []byte("HTTP/1.1 "))
	if !ok {
		return nil, false
	}
	statusLine, text, ok := bytes.Cut(rest, []byte(preRoutingHeaders))
	if !ok || len(statusLine) < 3 {
		return nil, false
	}
	status, err := strconv.Atoi(string(statusLine[:3]))
	if err != nil || status < 400 {
		return nil, false
	}
	body := apierr.Gateway(status, string(text)).Body()
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		statusLine, len(body), body), true
}
