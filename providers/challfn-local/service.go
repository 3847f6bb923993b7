package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

const (
	// serveArg is the first argument of a Service process.
	serveArg = "serve"
	// replyEnv carries the reply to the Service process: the environment of a process is
	// readable by its user only, its command line by everyone (ps).
	replyEnv = "CHALLFN_LOCAL_REPLY"
	// listenerFD is the descriptor of the listening socket the provider hands to the
	// Service (the first of exec.Cmd.ExtraFiles).
	listenerFD = 3
)

// serveMain is the Service process: it answers every connection on the inherited listener
// with the reply, then closes it. It runs until killed (Delete sends SIGTERM, whose default
// action ends the process and with it the socket).
func serveMain(args []string) error {
	fs := flag.NewFlagSet(serveArg, flag.ContinueOnError)
	// The id is not used here: it marks the process for ownsProcess.
	id := fs.String("id", "", "resource id (marks the process as the Service's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("--id is required")
	}
	reply := []byte(os.Getenv(replyEnv) + "\n")
	f := os.NewFile(listenerFD, "listener")
	ln, err := net.FileListener(f)
	if err != nil {
		return fmt.Errorf("inherited listener: %w", err)
	}
	_ = f.Close()
	return answer(ln, reply)
}

// answer writes reply to every accepted connection and closes it. A slow reader gets a few
// seconds, so that idle connections cannot pile up.
func answer(ln net.Listener, reply []byte) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write(reply)
		}()
	}
}

// startService binds 127.0.0.1:port (0: a free port) and starts `exe serve --id id` with the
// bound socket as descriptor 3, detached in its own session so that the engine, which kills
// its plugins' process groups when done, leaves it running. The socket is bound before the
// process starts: the Service is reachable (connections wait in the backlog) as soon as this
// returns, and no other process can take the port in between.
func startService(exe, id, reply string, port int) (pid, bound int, err error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return 0, 0, fmt.Errorf("listen on 127.0.0.1:%d: %w", port, err)
	}
	defer ln.Close()
	f, err := ln.File()
	if err != nil {
		return 0, 0, fmt.Errorf("listener descriptor: %w", err)
	}
	defer f.Close()
	cmd := exec.Command(exe, serveArg, "--id", id)
	cmd.Env = []string{replyEnv + "=" + reply}
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Stdin, stdout and stderr stay nil (/dev/null): the engine waits for EOF on the
	// plugin's pipes, which an inherited copy would hold open.
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("start %s: %w", exe, err)
	}
	// Reap it should it die while this provider still runs; afterwards init adopts it.
	go func() { _ = cmd.Wait() }()
	return cmd.Process.Pid, ln.Addr().(*net.TCPAddr).Port, nil
}

// ownsProcess tells whether pid is a live Service process of resource id. The command line
// is checked so that a recycled pid is never killed; a zombie has an empty command line.
func ownsProcess(pid int, id string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	return len(args) == 4 && string(args[1]) == serveArg && string(args[2]) == "--id" && string(args[3]) == id
}

// stopService ends the Service process of id: SIGTERM, then SIGKILL if it still runs after
// grace. It returns once the process is gone and its port no longer accepts connections. A
// process already gone is not an error.
func stopService(ctx context.Context, pid int, id string, port int, grace time.Duration) error {
	if ownsProcess(pid, id) {
		if err := signalUntilGone(ctx, pid, id, syscall.SIGTERM, grace); err != nil {
			if err := signalUntilGone(ctx, pid, id, syscall.SIGKILL, grace); err != nil {
				return fmt.Errorf("service process %d: %w", pid, err)
			}
		}
	}
	// The kernel closes the socket with the process; wait for it so that callers can count on
	// the port being closed. Should another process have taken the port since, stop waiting.
	return waitClosed(ctx, port, grace)
}

var errStillRunning = errors.New("still running")

func signalUntilGone(ctx context.Context, pid int, id string, sig syscall.Signal, grace time.Duration) error {
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(grace)
	for ownsProcess(pid, id) {
		if time.Now().After(deadline) {
			return errStillRunning
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// waitClosed waits until nothing accepts connections on 127.0.0.1:port, up to max.
func waitClosed(ctx context.Context, port int, max time.Duration) error {
	if port <= 0 {
		return nil
	}
	deadline := time.Now().Add(max)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return nil
		}
		_ = c.Close()
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
