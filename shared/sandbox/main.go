package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// Main is challfn-sandbox's entry point; it returns the exit status.
//
//	challfn-sandbox engine -- PATH ARGS...   supervise an engine process tree
//	challfn-sandbox jail                     PID 1 of a program's jail (started by Run)
//	challfn-sandbox probe                    print the flavor of jail this machine allows
//	challfn-sandbox true                     exit 0 (the program of probe)
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: challfn-sandbox engine -- PATH ARGS... | jail | probe")
		return 2
	}
	switch args[0] {
	case "engine":
		return engineMain(args[1:])
	case "jail":
		return jailMain()
	case "true":
		return 0
	case "probe":
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "challfn-sandbox probe:", err)
			return 1
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := Probe(ctx, self, Auto)
		if err != nil {
			fmt.Fprintln(stderr, "challfn-sandbox probe:", err)
			return 1
		}
		fmt.Fprintf(stdout, "flavor=%s\n", res.Flavor)
		if res.Degraded != "" {
			fmt.Fprintf(stdout, "refused: %s\n", res.Degraded)
		}
		return 0
	default:
		fmt.Fprintf(stderr, "challfn-sandbox: unknown command %q\n", args[0])
		return 2
	}
}

// Probe runs a trivial program (bin itself) the way mode would run a scenario, and
// reports the flavor of jail it got: what a function logs at start, so that an operator
// knows which guarantees hold (docs/threat-model.md).
func Probe(ctx context.Context, bin string, mode Mode) (Result, error) {
	r := &Runner{Bin: bin, Mode: mode}
	res, err := r.Run(ctx, Program{Path: bin, Args: []string{"true"}, ReadOnly: []string{bin}, Stdout: io.Discard, Stderr: io.Discard})
	if err == nil && res.Code != 0 {
		err = fmt.Errorf("sandbox: probe program exited %d", res.Code)
	}
	return res, err
}
