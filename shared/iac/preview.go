package iac

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/challfn/challfn/shared/bucketurl"
)

// A preview deploys nothing, so it needs no stack of the real backend: it
// runs against a private file:// backend in its own work directory, copied
// from a template that holds one empty stack of the project. That saves the
// `stack init` and `stack rm` processes the preview would otherwise run on
// the real backend (two of its three engine processes: registration is
// mostly a preview), leaves nothing in the real backend when the function
// dies mid-preview, and keeps a bucket backend (gs://, s3://) out of the
// registration path. The private backend lives in the work directory, which
// is hidden from the program like every work directory.

// previewStacks holds one template per project, made on its first preview.
type previewStacks struct {
	mu    sync.Mutex
	byKey map[string]*previewStack
}

// previewStack is a template: dir is a file:// backend holding the empty
// stack StackName(project, identity).
type previewStack struct {
	once     sync.Once
	dir      string
	identity string
	err      error
}

// previewTemplate returns the template for p's project, making it once.
func (e *Engine) previewTemplate(ctx context.Context, p Program) (*previewStack, error) {
	e.previews.mu.Lock()
	if e.previews.byKey == nil {
		e.previews.byKey = map[string]*previewStack{}
	}
	t := e.previews.byKey[p.Project]
	if t == nil {
		t = &previewStack{}
		e.previews.byKey[p.Project] = t
	}
	e.previews.mu.Unlock()
	t.once.Do(func() { t.err = e.makePreviewTemplate(ctx, p, t) })
	if t.err != nil {
		// Tried again by the next preview: the cause may have passed.
		e.previews.mu.Lock()
		if e.previews.byKey[p.Project] == t {
			delete(e.previews.byKey, p.Project)
		}
		e.previews.mu.Unlock()
		return nil, t.err
	}
	return t, nil
}

func (e *Engine) makePreviewTemplate(ctx context.Context, p Program, t *previewStack) (err error) {
	dir, err := os.MkdirTemp(e.cfg.TempDir, "challfn-preview-")
	if err != nil {
		return fmt.Errorf("iac: preview template: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	t.dir, t.identity = dir, e.cfg.NewIdentity()
	ws, err := e.workspace(ctx, p, t.identity, nil)
	if err != nil {
		return err
	}
	defer ws.close()
	if err := ws.useBackend(dir); err != nil {
		return err
	}
	// --no-select: no file in $PULUMI_HOME/workspaces to clean up after.
	if r := ws.run(ctx, "stack", "init", ws.stack, "--no-select"); r.err != nil {
		return r.opError("preview", ws.stack)
	}
	return nil
}

// useBackend points the workspace's processes at the file:// backend in dir.
func (ws *opWorkspace) useBackend(dir string) error {
	u, err := bucketurl.Normalize("file://" + dir)
	if err != nil {
		return fmt.Errorf("iac: preview backend: %w", err)
	}
	ws.ws.SetEnvVar("PULUMI_BACKEND_URL", u)
	return nil
}

// Preview runs `pulumi preview` of p with additional (docs/contract.md §8.4,
// without the leak): one CLI process, on a private copy of the project's
// template backend (see above).
func (e *Engine) Preview(ctx context.Context, p Program, additional map[string]string) error {
	ctx, err := detach(ctx)
	if err != nil {
		return err
	}
	t, err := e.previewTemplate(ctx, p)
	if err != nil {
		return err
	}
	ws, err := e.workspace(ctx, p, t.identity, additional)
	if err != nil {
		return err
	}
	defer ws.close()
	backend := filepath.Join(ws.dir, "state")
	if err := copyTree(t.dir, backend); err != nil {
		return fmt.Errorf("iac: preview backend: %w", err)
	}
	if err := ws.useBackend(backend); err != nil {
		return err
	}
	pctx, span := ws.startOp(ctx, "preview")
	r := ws.run(pctx, slices.Concat(previewArgs, []string{"--stack", ws.stack, "--event-log", ws.eventLog()})...)
	var perr error
	if r.err != nil {
		perr = r.opErrorWithEvents("preview", ws.stack, ws.eventLog())
	}
	endOp(span, ws.eventLog(), perr)
	return perr
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o600)
	})
}
