package httpx

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestJSONErrors: what net/http answers before any handler runs comes out in
// the contract's JSON shape with its status; handlers' answers, plain text
// included, are untouched.
func TestJSONErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "handler text", http.StatusTeapot)
	}))
	srv.MaxHeaderBytes = 4096
	go Serve(srv, l)
	defer srv.Close()
	for _, tc := range []struct {
		name, request string
		status        int
		json          bool
		code          float64
	}{
		{"bad escape", "GET /api/v1/instance/%ZZ HTTP/1.1\r\nHost: x\r\n\r\n", 400, true, 3},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400, true, 3},
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 20000) + "\r\n\r\n", 431, true, 8},
		{"unsupported transfer encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, true, 12},
		{"a handler's own plain text", "GET /x HTTP/1.1\r\nHost: x\r\n\r\n", 418, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprint(c, tc.request)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			var m map[string]any
			isJSON := resp.Header.Get("Content-Type") == "application/json" && json.Unmarshal(b, &m) == nil
			if isJSON != tc.json || tc.json && (m["code"] != tc.code || m["message"] == "" || m["details"] == nil) {
				t.Fatalf("body %q (%s), want JSON %v with code %v", b, resp.Header.Get("Content-Type"), tc.json, tc.code)
			}
		})
	}
}
