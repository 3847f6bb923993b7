package langhost

import (
	"slices"
	"testing"
)

func TestProgramEnviron(t *testing.T) {
	in := []string{
		"PATH=/bin", "PULUMI_CONFIG_PASSPHRASE=s", "PULUMI_CONFIG_PASSPHRASE_FILE=/f", "API_TOKENS=a,b",
		"OCI_PASSWORD=p", "ETCD_PASSWORD=e", "KUBECONFIG=/k", "PULUMI_CONFIG={}", "NOEQUALS", "OCI_INSECURE=true",
	}
	want := []string{"PATH=/bin", "KUBECONFIG=/k", "PULUMI_CONFIG={}", "NOEQUALS", "OCI_INSECURE=true"}
	if got := ProgramEnviron(in); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
