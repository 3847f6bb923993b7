package iac

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob://
	_ "gocloud.dev/blob/fileblob"  // file://
	_ "gocloud.dev/blob/gcsblob"   // gs://
	_ "gocloud.dev/blob/s3blob"    // s3://
	"gocloud.dev/gcerrors"
)

// A DIY backend writes a stack's lock before `stack init` creates the stack
// and deletes it after `stack rm` removed it. An engine killed in between
// leaves a lock file no stack owns: breakStaleLocks never sees it (no
// operation ever touches that stack again), so without a sweep these files
// pile up in the bucket, one per crash.

// locksPrefix is where a DIY backend keeps its locks:
// <prefix><org>/<project>/<stack>/<id>.json (projects mode) or
// <prefix><stack>/<id>.json (legacy layout).
const locksPrefix = ".pulumi/locks/"

// SweepLocks deletes the lock files of stacks that are not in stacks (the
// backend's listing, taken before the call) once they are older than an
// engine process can live (OpTimeout + the kill grace): by then the engine
// that wrote them is gone for sure. It returns how many it deleted. Locks of
// listed stacks are left to breakStaleLocks, which breaks them through the
// engine itself.
func (e *Engine) SweepLocks(ctx context.Context, stacks []StackRef) (int, error) {
	b, err := openBackendBucket(ctx, e.cfg.BackendURL)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	type key struct{ project, stack string }
	listed := map[key]bool{}
	for _, s := range stacks {
		listed[key{s.Project, s.Identity}] = true
		listed[key{"", s.Identity}] = true
	}
	staleAfter := e.cfg.OpTimeout + killGrace
	now := time.Now()
	removed := 0
	var errs []error
	it := b.List(&blob.ListOptions{Prefix: locksPrefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return removed, fmt.Errorf("iac: list locks: %w", err)
		}
		if obj.IsDir || !strings.HasSuffix(obj.Key, ".json") {
			continue
		}
		project, stack, ok := lockOwner(obj.Key)
		if !ok || listed[key{project, stack}] {
			continue
		}
		at, err := lockTime(ctx, b, obj)
		if gcerrors.Code(err) == gcerrors.NotFound {
			continue // released since the listing: the usual case
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if now.Sub(at) < staleAfter {
			continue // a `stack init` may be writing this stack right now
		}
		switch err := b.Delete(ctx, obj.Key); {
		case err == nil:
			removed++
		case gcerrors.Code(err) != gcerrors.NotFound:
			errs = append(errs, fmt.Errorf("iac: delete lock %s: %w", obj.Key, err))
		}
	}
	return removed, errors.Join(errs...)
}

// lockOwner reads project and stack from a lock's key; project is "" in the
// legacy layout.
func lockOwner(key string) (project, stack string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(key, locksPrefix), "/")
	switch len(parts) {
	case 4: // org/project/stack/id.json
		return parts[1], parts[2], true
	case 2: // stack/id.json
		return "", parts[0], true
	}
	return "", "", false
}

// lockTime is when a lock was taken: the timestamp the engine wrote in it,
// or the object's modification time when it cannot be read.
func lockTime(ctx context.Context, b *blob.Bucket, obj *blob.ListObject) (time.Time, error) {
	data, err := b.ReadAll(ctx, obj.Key)
	if err != nil {
		return time.Time{}, fmt.Errorf("iac: read lock %s: %w", obj.Key, err)
	}
	var content struct {
		Timestamp time.Time `json:"timestamp"`
	}
	if json.Unmarshal(data, &content) == nil && !content.Timestamp.IsZero() {
		return content.Timestamp, nil
	}
	return obj.ModTime, nil
}

// openBackendBucket opens the Pulumi backend's bucket the way the DIY
// backend does: file:// as given (Engine.New normalized it for writers), and
// for the other schemes the URL path is a prefix inside the bucket.
func openBackendBucket(ctx context.Context, backendURL string) (*blob.Bucket, error) {
	u, err := url.Parse(backendURL)
	if err != nil {
		return nil, fmt.Errorf("iac: backend URL: %w", err)
	}
	if u.Scheme == "file" {
		b, err := blob.OpenBucket(ctx, backendURL) // normalized by New
		if err != nil {
			return nil, fmt.Errorf("iac: open backend %s: %w", backendURL, err)
		}
		return b, nil
	}
	sub := strings.Trim(u.Path, "/")
	u.Path = ""
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("iac: open backend %s: %w", backendURL, err)
	}
	if sub != "" {
		b = blob.PrefixedBucket(b, path.Clean(sub)+"/")
	}
	return b, nil
}
