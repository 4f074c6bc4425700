package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func sampleDeltas() []slotDelta {
	return []slotDelta{
		{"prompt-hourly", "alice", t0, 3_600_000, "n0/aa", 120, 0},
		{"prompt-hourly", "bob", t0, 3_600_000, "n0/aa", 5, 3},
		{"req-minute", "alice@example.com", t0, minute, "n1/bb", 1 << 40, 1},
		{"req-minute", "", t0, minute, "n1/bb", 0, 0},
	}
}

func TestDeltaRoundTrip(t *testing.T) {
	h := header{Relay: true, SentAt: t0 + 5, Sender: "n0/aa"}
	msgs, skipped := packDeltas(h, sampleDeltas(), packetBudget)
	if len(msgs) != 1 || skipped != 0 {
		t.Fatalf("packDeltas: %d messages, %d skipped; want 1 and 0", len(msgs), skipped)
	}
	gh, got, err := decodeDeltas(msgs[0])
	if err != nil {
		t.Fatalf("decodeDeltas: %v", err)
	}
	if gh != h {
		t.Errorf("header = %+v, want %+v", gh, h)
	}
	if !reflect.DeepEqual(got, sampleDeltas()) {
		t.Errorf("deltas = %+v, want %+v", got, sampleDeltas())
	}
}

func TestDecodeDeltasErrors(t *testing.T) {
	good, _ := packDeltas(header{SentAt: 1, Sender: "s"}, sampleDeltas(), packetBudget)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errMalformed},
		{"version 2", append([]byte{2}, good[0][1:]...), errVersion},
		{"a digest", appendDigest(nil, header{Sender: "s"}, make([]bucketDigest, numBuckets)), errMalformed},
		{"no sender", []byte{wireVersion, 0, 2, 0}, errMalformed},
		{"truncated", good[0][:len(good[0])-1], errMalformed},
		{"huge string length", append(appendHeader(nil, header{Sender: "s"}), 0xff, 0xff, 0xff, 0xff, 0x0f), errMalformed},
		{"too large", make([]byte, maxDeltaMsg+1), errTooLarge},
		{"zero window", append(appendHeader(nil, header{Sender: "s"}), 1, 'l', 1, 'u', 2, 0, 0, 1, 1), errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := decodeDeltas(tt.in); !errors.Is(err, tt.want) {
				t.Errorf("decodeDeltas error = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestPackDeltasBudget: thousands of dirty keys, some with the longest
// strings allowed, are split into messages that each fit one packet, and
// nothing is lost.
func TestPackDeltasBudget(t *testing.T) {
	var ds []slotDelta
	for i := range 5000 {
		user := fmt.Sprintf("user-%d", i)
		if i%97 == 0 {
			user = strings.Repeat("x", maxUserLen)
		}
		ds = append(ds, slotDelta{strings.Repeat("l", 1+i%maxLimitLen), user, t0, minute, "n0/aa", uint64(i) << 20, uint64(i)})
	}
	ds = append(ds, slotDelta{"l", strings.Repeat("u", maxUserLen+1), t0, minute, "n0/aa", 1, 0}) // unencodable
	sender := strings.Repeat("s", maxReplicaLen)
	msgs, skipped := packDeltas(header{Sender: sender}, ds, packetBudget)
	if skipped != 1 {
		t.Errorf("skipped = %d, want 1", skipped)
	}
	var got []slotDelta
	for i, m := range msgs {
		if len(m) > packetBudget {
			t.Fatalf("message %d: %d bytes, over the %d budget", i, len(m), packetBudget)
		}
		_, part, err := decodeDeltas(m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		got = append(got, part...)
	}
	if want := ds[:len(ds)-1]; !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %d deltas, want the %d sent", len(got), len(want))
	}
	t.Logf("%d deltas in %d messages", len(ds), len(msgs))
}

func TestMaxEntryFitsPacket(t *testing.T) {
	d := slotDelta{strings.Repeat("l", maxLimitLen), strings.Repeat("u", maxUserLen), maxStartMs, maxWindowMs,
		strings.Repeat("r", maxReplicaLen), 1<<64 - 1, 1<<64 - 1}
	e, err := appendEntry(nil, &d, "")
	if err != nil {
		t.Fatal(err)
	}
	h := appendHeader(nil, header{SentAt: -1 << 62, Sender: strings.Repeat("s", maxReplicaLen)})
	if len(e) > maxEntryLen || len(h) > maxHeaderLen || len(h)+len(e) > packetBudget {
		t.Errorf("largest entry %d (max %d) + header %d (max %d) > budget %d", len(e), maxEntryLen, len(h), maxHeaderLen, packetBudget)
	}
}

func FuzzDecodeDelta(f *testing.F) {
	msgs, _ := packDeltas(header{Relay: true, SentAt: 42, Sender: "n0/aa"}, sampleDeltas(), packetBudget)
	f.Add(msgs[0])
	f.Add([]byte{wireVersion, 0, 0, 1, 's'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, ds, err := decodeDeltas(in)
		if err != nil {
			return
		}
		// Re-encoding what decoded must decode to the same thing.
		out, skipped := packDeltas(h, ds, maxDeltaMsg)
		if skipped != 0 {
			t.Fatalf("re-encode skipped %d deltas", skipped)
		}
		var again []slotDelta
		for _, m := range out {
			h2, part, err := decodeDeltas(m)
			if err != nil || h2 != h {
				t.Fatalf("re-decode: header %+v err %v, want %+v", h2, err, h)
			}
			again = append(again, part...)
		}
		if len(ds) != len(again) || (len(ds) > 0 && !reflect.DeepEqual(ds, again)) {
			t.Fatalf("round trip: got %+v, want %+v", again, ds)
		}
	})
}
