package iac

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/auto/events"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
)

// maxEventLine is the longest event-log line decoded; longer ones are skipped. The log
// holds the program's output and logs (diagnostic events): a line that long is a
// scenario flooding it, never an event challfn reads.
const maxEventLine = 4 << 20

// maxDiagnostics bounds the error diagnostics kept for an error's summary (which keeps
// 2000 bytes of them, see summarize).
const maxDiagnostics = 64 << 10

// readEvents decodes the engine's `--event-log` file (one JSON event per line) into the
// events the Automation API hands to optup.EventStreams receivers, streaming: only the
// lines that hold kind (the JSON field of the event wanted, "resOutputsEvent", ...) are
// decoded, so that a log grown by a chatty scenario costs a read, not its size in memory.
// The file is read once the process has ended: Stack.Up's streaming (a gRPC server fed by
// the CLI) is not reachable without Stack.Up and its extra processes.
func readEvents(path, kind string, fn func(events.EngineEvent)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	key := []byte(`"` + kind + `"`)
	r := bufio.NewReaderSize(f, 64<<10)
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) <= maxEventLine {
			line = append(line, chunk...)
		} else {
			line = append(line[:0], 0) // too long: poison it, skipped below
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '{' && bytes.Contains(t, key) {
			// Decoded as apitype.EngineEvent, as the auto package does: events.EngineEvent's
			// Error field is not part of the log.
			var ev apitype.EngineEvent
			if jerr := json.Unmarshal(t, &ev); jerr != nil {
				return fmt.Errorf("event log: %w", jerr)
			}
			fn(events.EngineEvent{EngineEvent: ev})
		}
		line = line[:0]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// stackOutputs returns the outputs of the root stack resource, as the engine reported them.
func stackOutputs(path string) (map[string]any, bool, error) {
	var outs map[string]any
	found := false
	err := readEvents(path, "resOutputsEvent", func(ev events.EngineEvent) {
		o := ev.ResOutputsEvent
		if o == nil || o.Metadata.Type != "pulumi:pulumi:Stack" || o.Metadata.New == nil {
			return
		}
		outs, found = o.Metadata.New.Outputs, true
	})
	if outs == nil {
		outs = map[string]any{}
	}
	return outs, found, err
}

func errorDiagnostics(path string) ([]string, error) {
	var msgs []string
	size := 0
	err := readEvents(path, "diagnosticEvent", func(ev events.EngineEvent) {
		d := ev.DiagnosticEvent
		if d == nil || d.Severity != "error" || size > maxDiagnostics {
			return
		}
		if m := strings.TrimSpace(d.Message); m != "" {
			msgs = append(msgs, m)
			size += len(m)
		}
	})
	return msgs, err
}

// hasSecret tells whether the event log masked a value: it shows secrets as "[secret]".
func hasSecret(v any) bool {
	switch t := v.(type) {
	case string:
		return t == "[secret]"
	case []any:
		for _, x := range t {
			if hasSecret(x) {
				return true
			}
		}
	case map[string]any:
		for _, x := range t {
			if hasSecret(x) {
				return true
			}
		}
	}
	return false
}

// summarize keeps a short, one-line, human message: the engine's error diagnostics when there are
// some, otherwise the last non-empty lines of its error output.
func summarize(diags []string, stderr string) string {
	const max = 2000
	var s string
	if len(diags) > 0 {
		s = strings.Join(diags, "; ")
	} else {
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if len(lines) > 5 {
			lines = lines[len(lines)-5:]
		}
		s = strings.Join(lines, "; ")
	}
	// One line: summaries end up in JSON error bodies and log fields.
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

func (r result) opError(op, stack string) *OpError {
	return &OpError{Op: op, Stack: stack, Summary: summarize(nil, r.stderr), Log: r.stdout + r.stderr, Err: r.err}
}

func (r result) opErrorWithEvents(op, stack, eventLog string) *OpError {
	diags, _ := errorDiagnostics(eventLog)
	return &OpError{Op: op, Stack: stack, Summary: summarize(diags, r.stderr), Log: r.stdout + r.stderr, Err: r.err}
}

// autoOpError wraps an error of a Workspace method. The auto package keeps the process'
// output inside the error, whose text ends with "\nstderr: <stderr>\n": that text is the
// log and its stderr part feeds the summary. Err stays the auto error itself, for
// auto.IsConcurrentUpdateError and the like.
func autoOpError(op, stack string, err error) *OpError {
	text := err.Error()
	stderr := text
	if i := strings.LastIndex(text, "\nstderr: "); i >= 0 {
		stderr = text[i+len("\nstderr: "):]
	}
	return &OpError{Op: op, Stack: stack, Summary: summarize(nil, stderr), Log: text, Err: err}
}
