package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/challfn/challfn/internal/testenv"
)

// fltEtcdCluster is a 3-member etcd cluster of Debian `etcd` processes on
// loopback (scripts/install-etcd.sh).
type fltEtcdCluster struct {
	bin     string
	members []*fltMember
	initial string
}

type fltMember struct {
	name, dir    string
	client, peer string
	cmd          *exec.Cmd
	done         chan struct{}
	log          *fltLog
}

func fltFreePort(t testing.TB) string {
	t.Helper()
	return fltFreePorts(t, 1)[0]
}

// fltFreePorts returns n distinct free loopback addresses: every listener
// stays open until all are taken, so the kernel cannot hand one port out twice.
func fltFreePorts(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// fltStartCluster starts three members and waits for a leader.
func fltStartCluster(t testing.TB) *fltEtcdCluster {
	t.Helper()
	if out, err := exec.Command(filepath.Join(testenv.Root(), "scripts", "install-etcd.sh")).CombinedOutput(); err != nil {
		t.Fatalf("install-etcd.sh: %v\n%s", err, out)
	}
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("etcd server not installed (scripts/install-etcd.sh): %v", err)
	}
	c := &fltEtcdCluster{bin: bin}
	var initial []string
	ports := fltFreePorts(t, 6)
	for i := range 3 {
		m := &fltMember{name: fmt.Sprintf("m%d", i), dir: filepath.Join(t.TempDir(), "data"),
			client: "http://" + ports[2*i], peer: "http://" + ports[2*i+1]}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	c.initial = strings.Join(initial, ",")
	for _, m := range c.members {
		c.Start(t, m)
	}
	t.Cleanup(func() {
		for _, m := range c.members {
			c.Kill(m)
		}
	})
	c.WaitLeader(t, 30*time.Second)
	return c
}

// Endpoints of every member.
func (c *fltEtcdCluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.client
	}
	return out
}

// Start (re)starts member m with its data.
func (c *fltEtcdCluster) Start(t testing.TB, m *fltMember) {
	t.Helper()
	state := "new"
	if _, err := os.Stat(m.dir); err == nil {
		state = "existing"
	}
	m.cmd = exec.Command(c.bin,
		"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
		"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
		"--initial-cluster", c.initial, "--initial-cluster-state", state,
		"--initial-cluster-token", "challfn-faults",
		"--heartbeat-interval", "100", "--election-timeout", "1000",
		"--logger", "zap", "--log-outputs", "stderr")
	m.log = &fltLog{}
	m.cmd.Stderr = m.log
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(m.cmd, m.done)
}

// Kill is kill -9 of member m.
func (c *fltEtcdCluster) Kill(m *fltMember) {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
	m.cmd = nil
}

// Leader returns the member that leads.
func (c *fltEtcdCluster) Leader(t testing.TB) *fltMember {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, m := range c.members {
		if m.cmd == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, m.client)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return m
		}
	}
	return nil
}

// WaitLeader waits until a member leads.
func (c *fltEtcdCluster) WaitLeader(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for c.Leader(t) == nil {
		if time.Now().After(deadline) {
			for _, m := range c.members {
				t.Logf("%s: %s", m.name, fltTail(m.log.String(), 2000))
			}
			t.Fatalf("no etcd leader after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
