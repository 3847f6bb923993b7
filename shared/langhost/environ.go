package langhost

import "strings"

// hidden are the variables that hold challfn's own credentials. The engine
// and challfn need them; a scenario never does (the engine decrypts its
// secrets for it), and a scenario is code written by someone else: it must
// not be able to print them into its outputs, its errors or the logs
// (docs/design.md, decision 10). This is defence in depth, not a sandbox: a program
// running as the same user can still read its parents' /proc/<pid>/environ.
var hidden = map[string]bool{
	"PULUMI_CONFIG_PASSPHRASE":      true,
	"PULUMI_CONFIG_PASSPHRASE_FILE": true,
	"PULUMI_ACCESS_TOKEN":           true,
	"API_TOKENS":                    true,
	"API_TOKENS_FILE":               true,
	"OCI_USERNAME":                  true,
	"OCI_PASSWORD":                  true,
	"OCI_PASSWORD_FILE":             true,
	"ETCD_USERNAME":                 true,
	"ETCD_PASSWORD":                 true,
	"ETCD_PASSWORD_FILE":            true,
}

// ProgramEnviron returns environ ("KEY=value" entries) without challfn's
// credentials: the environment a scenario program runs with.
func ProgramEnviron(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !hidden[strings.ToUpper(k)] {
			out = append(out, kv)
		}
	}
	return out
}
