package api

import (
	"bytes"
	"strconv"
	"testing"
	"time"
)

func challengeWithInstances(n int) *Challenge {
	c := fullChallenge()
	c.Instances = nil
	for i := 0; i < n; i++ {
		c.Instances = append(c.Instances, &Instance{
			ChallengeID: "1", SourceID: strconv.Itoa(i), Since: t0, LastRenew: t0, Until: ptr(t0.Add(time.Hour)),
			ConnectionInfo: "nc 10.0.0.1 " + strconv.Itoa(30000+i), Flags: []string{"FLAG{" + strconv.Itoa(i) + "}"},
			Additional: map[string]string{"k": "v"},
		})
	}
	return c
}

func BenchmarkEncodeChallenge10Instances(b *testing.B) {
	c := challengeWithInstances(10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeCreateChallengeRequest(b *testing.B) {
	body := []byte(`{"id":"12","scenario":"registry:5000/scn:latest","timeout":"600s","until":"2024-07-10T15:00:00Z","additional":{"k":"v","x":"y"},"min":0,"max":2,"updateStrategy":"update_in_place"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeCreateChallengeRequest(bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// Reference point: the gateway's marshaler on an already-built message (what
// upstream pays with generated code is lower still).
func BenchmarkGatewayMarshalChallenge10Instances(b *testing.B) {
	pm, err := protoOf(challengeWithInstances(10))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := gateway.Marshal(pm); err != nil {
			b.Fatal(err)
		}
	}
}
