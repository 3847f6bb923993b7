package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/challfn/challfn/shared/apierr"
)

// The gateway's default marshaler (runtime/marshaler_registry.go).
// AllowPartial only skips the required-field check, a no-op for proto3
// messages that costs a sixth of the encoding time.
var (
	marshalOptions   = protojson.MarshalOptions{EmitUnpopulated: true, AllowPartial: true}
	unmarshalOptions = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// Message is one of the wire types of this package.
type Message interface {
	toProto() (*dynamicpb.Message, error)
}

// Encode renders m as grpc-gateway renders the same message.
func Encode(m Message) ([]byte, error) {
	pm, err := m.toProto()
	if err != nil {
		return nil, err
	}
	return marshalOptions.Marshal(pm)
}

// decodeBody reproduces the gateway's body handling
// (`marshaler.NewDecoder(req.Body).Decode(&protoReq)`): encoding/json reads
// the first JSON value (trailing bytes are ignored, an empty body is the
// default message), then protojson unmarshals it. A failure is a 400 with the
// parser's text, except a body over the size cap.
func decodeBody(r io.Reader, md protoreflect.MessageDescriptor) (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(md)
	if r == nil {
		return m, nil
	}
	var raw json.RawMessage
	if err := json.NewDecoder(r).Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return m, nil
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, apierr.BodyTooLarge(mbe.Limit).WithCause(err)
		}
		return nil, apierr.BadRequest(err.Error())
	}
	if err := unmarshalOptions.Unmarshal(raw, m); err != nil {
		return nil, apierr.BadRequest(err.Error())
	}
	return m, nil
}

// DecodeCreateChallengeRequest reads a CreateChallengeRequest body.
func DecodeCreateChallengeRequest(r io.Reader) (*CreateChallengeRequest, error) {
	m, err := decodeBody(r, mdCreateChallengeRequest)
	if err != nil {
		return nil, err
	}
	out := &CreateChallengeRequest{}
	out.fromProto(m)
	return out, nil
}

// DecodeUpdateChallengeRequest reads an UpdateChallengeRequest body. The mask
// is not checked here: see CheckUpdateMask (upstream checks it in the handler).
func DecodeUpdateChallengeRequest(r io.Reader) (*UpdateChallengeRequest, error) {
	m, err := decodeBody(r, mdUpdateChallengeRequest)
	if err != nil {
		return nil, err
	}
	out := &UpdateChallengeRequest{}
	out.fromProto(m)
	return out, nil
}

// DecodeCreateInstanceRequest reads a CreateInstanceRequest body.
func DecodeCreateInstanceRequest(r io.Reader) (*CreateInstanceRequest, error) {
	m, err := decodeBody(r, mdCreateInstanceRequest)
	if err != nil {
		return nil, err
	}
	out := &CreateInstanceRequest{}
	out.fromProto(m)
	return out, nil
}

// DecodeRenewInstanceRequest reads a RenewInstanceRequest body (usually `{}`).
func DecodeRenewInstanceRequest(r io.Reader) (*RenewInstanceRequest, error) {
	m, err := decodeBody(r, mdRenewInstanceRequest)
	if err != nil {
		return nil, err
	}
	out := &RenewInstanceRequest{}
	out.fromProto(m)
	return out, nil
}

// unmarshalJSON is the client-side read of one JSON value (e.g. a response).
func unmarshalJSON(b []byte, md protoreflect.MessageDescriptor) (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(md)
	if err := unmarshalOptions.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

// json.Marshaler / json.Unmarshaler with the gateway's semantics, for clients
// and tests (json.Marshal compacts and HTML-escapes the output, which keeps
// its meaning).

func (c *Challenge) MarshalJSON() ([]byte, error)              { return Encode(c) }
func (i *Instance) MarshalJSON() ([]byte, error)               { return Encode(i) }
func (r *CreateChallengeRequest) MarshalJSON() ([]byte, error) { return Encode(r) }
func (r *UpdateChallengeRequest) MarshalJSON() ([]byte, error) { return Encode(r) }
func (r *CreateInstanceRequest) MarshalJSON() ([]byte, error)  { return Encode(r) }
func (r *RenewInstanceRequest) MarshalJSON() ([]byte, error)   { return Encode(r) }

func (c *Challenge) UnmarshalJSON(b []byte) error {
	m, err := unmarshalJSON(b, mdChallenge)
	if err != nil {
		return err
	}
	*c = Challenge{}
	c.fromProto(m)
	return nil
}

func (i *Instance) UnmarshalJSON(b []byte) error {
	m, err := unmarshalJSON(b, mdInstance)
	if err != nil {
		return err
	}
	*i = Instance{}
	i.fromProto(m)
	return nil
}

func (r *CreateChallengeRequest) UnmarshalJSON(b []byte) error {
	m, err := unmarshalJSON(b, mdCreateChallengeRequest)
	if err != nil {
		return err
	}
	*r = CreateChallengeRequest{}
	r.fromProto(m)
	return nil
}

func (r *UpdateChallengeRequest) UnmarshalJSON(b []byte) error {
	m, err := unmarshalJSON(b, mdUpdateChallengeRequest)
	if err != nil {
		return err
	}
	*r = UpdateChallengeRequest{}
	r.fromProto(m)
	return nil
}

func (r *CreateInstanceRequest) UnmarshalJSON(b []byte) error {
	m, err := unmarshalJSON(b, mdCreateInstanceRequest)
	if err != nil {
		return err
	}
	*r = CreateInstanceRequest{}
	r.fromProto(m)
	return nil
}

func (r *RenewInstanceRequest) UnmarshalJSON(b []byte) error {
	m, err := unmarshalJSON(b, mdRenewInstanceRequest)
	if err != nil {
		return err
	}
	*r = RenewInstanceRequest{}
	r.fromProto(m)
	return nil
}

// ---- Go struct <-> dynamic message ----

func fd(m protoreflect.Message, name protoreflect.Name) protoreflect.FieldDescriptor {
	f := m.Descriptor().Fields().ByName(name)
	if f == nil {
		panic(fmt.Sprintf("api: %s has no field %s", m.Descriptor().FullName(), name))
	}
	return f
}

func setString(m protoreflect.Message, name protoreflect.Name, v string) {
	if v != "" {
		m.Set(fd(m, name), protoreflect.ValueOfString(v))
	}
}

func getString(m protoreflect.Message, name protoreflect.Name) string {
	return m.Get(fd(m, name)).String()
}

func setInt64(m protoreflect.Message, name protoreflect.Name, v int64) {
	if v != 0 {
		m.Set(fd(m, name), protoreflect.ValueOfInt64(v))
	}
}

func getInt64(m protoreflect.Message, name protoreflect.Name) int64 {
	return m.Get(fd(m, name)).Int()
}

func setSecondsNanos(m protoreflect.Message, secs int64, nanos int32) {
	fs := m.Descriptor().Fields()
	m.Set(fs.ByNumber(1), protoreflect.ValueOfInt64(secs))
	m.Set(fs.ByNumber(2), protoreflect.ValueOfInt32(nanos))
}

func getSecondsNanos(m protoreflect.Message) (int64, int32) {
	fs := m.Descriptor().Fields()
	return m.Get(fs.ByNumber(1)).Int(), int32(m.Get(fs.ByNumber(2)).Int())
}

func setDuration(m protoreflect.Message, name protoreflect.Name, d *time.Duration) {
	if d == nil {
		return
	}
	f := fd(m, name)
	dm := m.NewField(f).Message()
	p := durationpb.New(*d)
	setSecondsNanos(dm, p.Seconds, p.Nanos)
	m.Set(f, protoreflect.ValueOfMessage(dm))
}

// getDuration saturates at the time.Duration range (about ±292 years), as
// durationpb.AsDuration does; protojson accepts up to ±10,000 years.
func getDuration(m protoreflect.Message, name protoreflect.Name) *time.Duration {
	f := fd(m, name)
	if !m.Has(f) {
		return nil
	}
	s, n := getSecondsNanos(m.Get(f).Message())
	d := (&durationpb.Duration{Seconds: s, Nanos: n}).AsDuration()
	return &d
}

func setTime(m protoreflect.Message, name protoreflect.Name, t time.Time) {
	f := fd(m, name)
	tm := m.NewField(f).Message()
	setSecondsNanos(tm, t.Unix(), int32(t.Nanosecond()))
	m.Set(f, protoreflect.ValueOfMessage(tm))
}

func getTime(m protoreflect.Message, name protoreflect.Name) (time.Time, bool) {
	f := fd(m, name)
	if !m.Has(f) {
		return time.Time{}, false
	}
	s, n := getSecondsNanos(m.Get(f).Message())
	return (&timestamppb.Timestamp{Seconds: s, Nanos: n}).AsTime(), true
}

func getTimePtr(m protoreflect.Message, name protoreflect.Name) *time.Time {
	t, ok := getTime(m, name)
	if !ok {
		return nil
	}
	return &t
}

func setMap(m protoreflect.Message, name protoreflect.Name, v map[string]string) {
	if len(v) == 0 {
		return
	}
	mp := m.Mutable(fd(m, name)).Map()
	for k, val := range v {
		mp.Set(protoreflect.ValueOfString(k).MapKey(), protoreflect.ValueOfString(val))
	}
}

// getMap returns nil for an empty map.
func getMap(m protoreflect.Message, name protoreflect.Name) map[string]string {
	f := fd(m, name)
	if !m.Has(f) {
		return nil
	}
	mp := m.Get(f).Map()
	out := make(map[string]string, mp.Len())
	mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		out[k.String()] = v.String()
		return true
	})
	return out
}

func (c *Challenge) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdChallenge)
	setString(m, "id", c.ID)
	setString(m, "scenario", c.Scenario)
	setDuration(m, "timeout", c.Timeout)
	if c.Until != nil {
		setTime(m, "until", *c.Until)
	}
	if len(c.Instances) > 0 {
		f := fd(m, "instances")
		l := m.Mutable(f).List()
		for _, inst := range c.Instances {
			if inst == nil {
				return nil, errors.New("api: nil instance in challenge")
			}
			im, err := inst.toProto()
			if err != nil {
				return nil, err
			}
			l.Append(protoreflect.ValueOfMessage(im))
		}
	}
	setMap(m, "additional", c.Additional)
	setInt64(m, "min", c.Min)
	setInt64(m, "max", c.Max)
	return m, nil
}

func (c *Challenge) fromProto(m protoreflect.Message) {
	c.ID = getString(m, "id")
	c.Scenario = getString(m, "scenario")
	c.Timeout = getDuration(m, "timeout")
	c.Until = getTimePtr(m, "until")
	l := m.Get(fd(m, "instances")).List()
	for i := 0; i < l.Len(); i++ {
		inst := &Instance{}
		inst.fromProto(l.Get(i).Message())
		c.Instances = append(c.Instances, inst)
	}
	c.Additional = getMap(m, "additional")
	c.Min = getInt64(m, "min")
	c.Max = getInt64(m, "max")
}

func (i *Instance) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdInstance)
	setString(m, "challenge_id", i.ChallengeID)
	setString(m, "source_id", i.SourceID)
	if !i.Since.IsZero() {
		setTime(m, "since", i.Since)
	}
	if !i.LastRenew.IsZero() {
		setTime(m, "last_renew", i.LastRenew)
	}
	if i.Until != nil {
		setTime(m, "until", *i.Until)
	}
	setString(m, "connection_info", i.ConnectionInfo)
	if len(i.Flags) == 1 {
		// Presence matters (proto3 optional): set even an empty flag.
		m.Set(fd(m, "flag"), protoreflect.ValueOfString(i.Flags[0]))
	}
	if len(i.Flags) > 0 {
		l := m.Mutable(fd(m, "flags")).List()
		for _, f := range i.Flags {
			l.Append(protoreflect.ValueOfString(f))
		}
	}
	setMap(m, "additional", i.Additional)
	return m, nil
}

func (i *Instance) fromProto(m protoreflect.Message) {
	i.ChallengeID = getString(m, "challenge_id")
	i.SourceID = getString(m, "source_id")
	i.Since, _ = getTime(m, "since")
	i.LastRenew, _ = getTime(m, "last_renew")
	i.Until = getTimePtr(m, "until")
	i.ConnectionInfo = getString(m, "connection_info")
	l := m.Get(fd(m, "flags")).List()
	for k := 0; k < l.Len(); k++ {
		i.Flags = append(i.Flags, l.Get(k).String())
	}
	// A server that only sends the deprecated single flag still has one flag.
	if f := fd(m, "flag"); len(i.Flags) == 0 && m.Has(f) {
		i.Flags = []string{m.Get(f).String()}
	}
	i.Additional = getMap(m, "additional")
}

func (r *CreateChallengeRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdCreateChallengeRequest)
	setString(m, "id", r.ID)
	setString(m, "scenario", r.Scenario)
	setDuration(m, "timeout", r.Timeout)
	if r.Until != nil {
		setTime(m, "until", *r.Until)
	}
	setMap(m, "additional", r.Additional)
	setInt64(m, "min", r.Min)
	setInt64(m, "max", r.Max)
	return m, nil
}

func (r *CreateChallengeRequest) fromProto(m protoreflect.Message) {
	r.ID = getString(m, "id")
	r.Scenario = getString(m, "scenario")
	r.Timeout = getDuration(m, "timeout")
	r.Until = getTimePtr(m, "until")
	r.Additional = getMap(m, "additional")
	r.Min = getInt64(m, "min")
	r.Max = getInt64(m, "max")
}

func (r *UpdateChallengeRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdUpdateChallengeRequest)
	setString(m, "id", r.ID)
	if r.Scenario != nil {
		m.Set(fd(m, "scenario"), protoreflect.ValueOfString(*r.Scenario))
	}
	if r.UpdateStrategy != nil {
		m.Set(fd(m, "update_strategy"), protoreflect.ValueOfEnum(protoreflect.EnumNumber(*r.UpdateStrategy)))
	}
	setDuration(m, "timeout", r.Timeout)
	if r.Until != nil {
		setTime(m, "until", *r.Until)
	}
	if r.UpdateMask != nil {
		f := fd(m, "update_mask")
		mm := m.NewField(f).Message()
		l := mm.Mutable(mm.Descriptor().Fields().ByNumber(1)).List()
		for _, p := range r.UpdateMask.Paths {
			l.Append(protoreflect.ValueOfString(p))
		}
		m.Set(f, protoreflect.ValueOfMessage(mm))
	}
	setMap(m, "additional", r.Additional)
	setInt64(m, "min", r.Min)
	setInt64(m, "max", r.Max)
	return m, nil
}

func (r *UpdateChallengeRequest) fromProto(m protoreflect.Message) {
	r.ID = getString(m, "id")
	if f := fd(m, "scenario"); m.Has(f) {
		s := m.Get(f).String()
		r.Scenario = &s
	}
	if f := fd(m, "update_strategy"); m.Has(f) {
		s := UpdateStrategy(m.Get(f).Enum())
		r.UpdateStrategy = &s
	}
	r.Timeout = getDuration(m, "timeout")
	r.Until = getTimePtr(m, "until")
	if f := fd(m, "update_mask"); m.Has(f) {
		mm := m.Get(f).Message()
		l := mm.Get(mm.Descriptor().Fields().ByNumber(1)).List()
		mask := &FieldMask{Paths: make([]string, 0, l.Len())}
		for k := 0; k < l.Len(); k++ {
			mask.Paths = append(mask.Paths, l.Get(k).String())
		}
		r.UpdateMask = mask
	}
	r.Additional = getMap(m, "additional")
	r.Min = getInt64(m, "min")
	r.Max = getInt64(m, "max")
}

func (r *CreateInstanceRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdCreateInstanceRequest)
	setString(m, "challenge_id", r.ChallengeID)
	setString(m, "source_id", r.SourceID)
	setMap(m, "additional", r.Additional)
	return m, nil
}

func (r *CreateInstanceRequest) fromProto(m protoreflect.Message) {
	r.ChallengeID = getString(m, "challenge_id")
	r.SourceID = getString(m, "source_id")
	r.Additional = getMap(m, "additional")
}

func (r *RenewInstanceRequest) toProto() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(mdRenewInstanceRequest)
	setString(m, "challenge_id", r.ChallengeID)
	setString(m, "source_id", r.SourceID)
	return m, nil
}

func (r *RenewInstanceRequest) fromProto(m protoreflect.Message) {
	r.ChallengeID = getString(m, "challenge_id")
	r.SourceID = getString(m, "source_id")
}

// protoOf exposes the dynamic message to the tests of this package.
func protoOf(m Message) (proto.Message, error) { return m.toProto() }
