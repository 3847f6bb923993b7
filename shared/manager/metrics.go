package manager

import (
	"context"
	"time"

	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/telemetry"
)

// Values of the op attribute of the deploy and destroy histograms
// (telemetry.RecordDeploy, RecordDestroy), what the alerts select on.
const (
	opCreate   = "create"   // a source's instance deployed fresh
	opUpdate   = "update"   // a hot update (or a claimed instance redeployed with additional values)
	opPool     = "pool"     // a pooled instance deployed, or destroyed by a pool shrink
	opDelete   = "delete"   // a deletion asked for (API, challenge deletion)
	opExpire   = "expire"   // an expired instance destroyed
	opRollback = "rollback" // an instance destroyed because its creation or claim failed
	opOrphan   = "orphan"   // a stack no record knows destroyed, or a record without stack removed, by the janitor
)

// deployOp is the op of deploying an instance for sourceID ("" = the pool).
func deployOp(sourceID string) string {
	if sourceID == "" {
		return opPool
	}
	return opCreate
}

// destroyOp is the op of a deletion event's reason.
func destroyOp(reason events.DeleteReason) string {
	switch reason {
	case events.ReasonExpired:
		return opExpire
	case events.ReasonPoolShrink:
		return opPool
	case events.ReasonRepair:
		return opOrphan
	}
	return opDelete
}

func (m *Manager) engineCreate(ctx context.Context, op string, p iac.Program, identity string, additional map[string]string) (iac.Outputs, error) {
	start := time.Now()
	outs, err := m.o.Engine.Create(ctx, p, identity, additional)
	telemetry.Metrics().RecordDeploy(ctx, op, "", time.Since(start), err)
	m.noteIgnored(ctx, outs)
	return outs, err
}

func (m *Manager) engineUpdate(ctx context.Context, op string, old, new iac.Program, s iac.Strategy, identity string, additional map[string]string) (string, iac.Outputs, error) {
	start := time.Now()
	id, outs, err := m.o.Engine.Update(ctx, old, new, s, identity, additional)
	telemetry.Metrics().RecordDeploy(ctx, op, string(s), time.Since(start), err)
	m.noteIgnored(ctx, outs)
	return id, outs, err
}

func (m *Manager) engineDestroy(ctx context.Context, op, project, identity string) error {
	start := time.Now()
	err := m.o.Engine.DestroyStack(ctx, project, identity)
	telemetry.Metrics().RecordDestroy(ctx, op, time.Since(start), err)
	return err
}

// noteIgnored tells the operator about outputs that deployed but were ignored (see
// iac.ParseOutputs): what the ChallMaker meant is likely not what the players get.
func (m *Manager) noteIgnored(ctx context.Context, outs iac.Outputs) {
	if len(outs.Ignored) > 0 {
		m.log.WarnContext(ctx, "scenario outputs ignored", "outputs", outs.Ignored)
	}
}
