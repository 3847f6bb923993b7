package iac

import (
	"context"
	"regexp"
	"time"
)

// A `pulumi up` or `destroy` whose process dies (the function instance killed
// with its engine) leaves the stack's lock in a DIY backend (file://, gs://,
// s3://, azblob://) forever: every later operation on the stack fails with
// "the stack is currently locked", so neither the retried DELETE nor the
// janitor could ever remove the stack. The lock carries no heartbeat, only
// its creation time; but every engine process is interrupted at OpTimeout
// and killed killGrace later (see run), so a lock older than that belongs to
// an engine that is gone and is broken with `pulumi cancel`. A caller that
// only ever operates on stacks no other engine may touch (Config.ExclusiveStacks)
// knows any lock it meets to be a dead engine's, and breaks it at once.

// killGrace is how long PulumiCommand.Run waits between the interrupt and the
// kill of a process whose context ended.
const killGrace = 10 * time.Second

var (
	stackLocked   = regexp.MustCompile(`the stack is currently locked by \d+ lock\(s\)`)
	lockCreatedAt = regexp.MustCompile(`created by .* \(pid \d+\) at (\S+)`)
)

// staleLocks reports whether stderr is a "stack locked" failure whose every
// lock is older than staleAfter (any lock when staleAfter is 0: no clock of
// another host is compared then).
func staleLocks(stderr string, staleAfter time.Duration, now time.Time) bool {
	if !stackLocked.MatchString(stderr) {
		return false
	}
	if staleAfter <= 0 {
		return true
	}
	ms := lockCreatedAt.FindAllStringSubmatch(stderr, -1)
	if len(ms) == 0 {
		return false
	}
	for _, m := range ms {
		at, err := time.Parse(time.RFC3339, m[1])
		if err != nil || now.Sub(at) < staleAfter {
			return false
		}
	}
	return true
}

// breakStaleLocks removes the stack's locks with `pulumi cancel` when stderr
// says that only stale locks held it; true when the operation may be retried.
func (ws *opWorkspace) breakStaleLocks(ctx context.Context, stderr string) bool {
	staleAfter := ws.e.cfg.OpTimeout + killGrace
	if ws.e.cfg.ExclusiveStacks {
		staleAfter = 0 // see Config.ExclusiveStacks
	}
	if ws.stack == "" || !staleLocks(stderr, staleAfter, time.Now()) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, ws.e.cfg.OpTimeout)
	defer cancel()
	_, _, _, err := ws.ws.PulumiCommand().Run(ctx, ws.ws.WorkDir(), nil, nil, nil, ws.cmdEnv(), "cancel", "--yes", "--stack", ws.stack)
	return err == nil
}
