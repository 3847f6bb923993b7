package apierr

import "testing"

func TestPublic(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"stale engine lock",
			"the stack is currently locked by 1 lock(s). file:///var/lib/challfn/state/.pulumi/locks/organization/p/0123/4d.json: created by root@challfn-instance-7d9 (pid 4242) at 2026-12-01",
			"the stack is currently locked by 1 lock(s). [state]: created by another engine at 2026-12-01"},
		{"compiler output keeps file and line",
			"/tmp/challfn-cache/build-123/main.go:12:3: undefined: foo",
			"main.go:12:3: undefined: foo"},
		{"paths inside a sentence", `open "/root/.pulumi/plugins/x": no such file; see (/etc/challfn/conf)`,
			`open "x": no such file; see (conf)`},
		{"bucket URLs", "error: read gs://ctf-state/.pulumi/stacks/p/x.json: 403", "error: read [state]: 403"},
		{"registry references stay", "127.0.0.1:5001/scenarios/x:latest not found", "127.0.0.1:5001/scenarios/x:latest not found"},
		{"http URLs stay", "GET http://127.0.0.1:5001/v2/x/manifests/latest: 404", "GET http://127.0.0.1:5001/v2/x/manifests/latest: 404"},
		{"flags with slashes stay", "CTF{a/b} and 1/2", "CTF{a/b} and 1/2"},
		{"root path", "cannot write /", "cannot write [path]"},
		{"plain text", "program failed: exit status 1", "program failed: exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Public(tc.in); got != tc.want {
				t.Fatalf("Public(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}
