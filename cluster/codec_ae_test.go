package cluster

import (
	"bytes"
	"compress/flate"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

func randomDigests(r *rand.Rand) []bucketDigest {
	ds := make([]bucketDigest, numBuckets)
	for i := range ds {
		if r.IntN(3) > 0 {
			ds[i] = bucketDigest{sum: r.Uint64(), count: uint32(r.IntN(1 << 20))}
		}
	}
	return ds
}

func TestDigestRoundTrip(t *testing.T) {
	ds := randomDigests(rand.New(rand.NewPCG(1, 2)))
	h := header{Kind: kindDigest, SentAt: t0, Sender: "n0/aa"}
	buf := appendDigest(nil, h, ds)
	if len(buf) > maxDigestMsg {
		t.Fatalf("digest of %d bytes over maxDigestMsg %d", len(buf), maxDigestMsg)
	}
	got := make([]bucketDigest, numBuckets)
	gh, err := decodeDigest(buf, got)
	if err != nil || gh != h || !reflect.DeepEqual(got, ds) {
		t.Fatalf("decodeDigest: header %+v err %v, digests equal %v; want %+v, nil, true", gh, err, reflect.DeepEqual(got, ds), h)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"truncated", buf[:len(buf)-1], errMalformed},
		{"trailing byte", append(bytes.Clone(buf), 0), errMalformed},
		{"other bucket count", append(appendHeader(nil, header{Kind: kindDigest, Sender: "s"}), 0x80, 0x10), errVersion},
		{"a delta", appendHeader(nil, header{Sender: "s"}), errMalformed},
		{"too large", make([]byte, maxDigestMsg+1), errTooLarge},
	}
	for _, tt := range tests {
		if _, err := decodeDigest(tt.in, got); !errors.Is(err, tt.want) {
			t.Errorf("%s: decodeDigest error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestPullRoundTrip(t *testing.T) {
	p := &pullMsg{ID: 77}
	for _, b := range []int{0, 5, 63, 64, 4095} {
		p.want(b)
		p.Have = append(p.Have, bucketDigest{sum: uint64(b) << 40, count: uint32(b)})
	}
	h := header{Kind: kindPull, SentAt: t0, Sender: "n1/bb"}
	buf := appendPull(nil, h, p)
	gh, got, err := decodePull(buf)
	if err != nil || gh != h || !reflect.DeepEqual(got, p) {
		t.Fatalf("decodePull = %+v %+v %v, want %+v %+v", gh, got, err, h, p)
	}
	claim := &pullMsg{ID: 1}
	for b := range numBuckets {
		claim.want(b) // every bucket wanted, no digest follows
	}
	for _, in := range [][]byte{buf[:len(buf)-1], append(bytes.Clone(buf), 1), appendPull(nil, h, claim)} {
		if _, _, err := decodePull(in); !errors.Is(err, errMalformed) {
			t.Errorf("decodePull of a bad pull (%d bytes): err %v, want %v", len(in), err, errMalformed)
		}
	}
}

func encodeChunk(t testing.TB, h header, c chunkHead, ds []slotDelta) []byte {
	t.Helper()
	enc := chunkEncoder{sender: h.Sender}
	for i := range ds {
		enc.add(&ds[i])
	}
	msg, err := compressChunk(h, c, enc.raw)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func collectChunk(buf []byte) (header, chunkHead, []slotDelta, error) {
	var all []slotDelta
	h, c, err := decodeChunk(buf, 3, func(ds []slotDelta) { all = append(all, ds...) })
	return h, c, all, err
}

func TestChunkRoundTrip(t *testing.T) {
	h := header{Kind: kindChunk, SentAt: t0, Sender: "n0/aa"}
	for _, ds := range [][]slotDelta{nil, sampleDeltas()} {
		c := chunkHead{ID: 9, Seq: 2, Total: 3}
		gh, gc, got, err := collectChunk(encodeChunk(t, h, c, ds))
		if err != nil || gh != h || gc != c || len(got) != len(ds) || (len(ds) > 0 && !reflect.DeepEqual(got, ds)) {
			t.Errorf("chunk of %d: got %+v %+v %+v %v", len(ds), gh, gc, got, err)
		}
	}
	if _, _, _, err := collectChunk(encodeChunk(t, h, chunkHead{ID: 1, Seq: 3, Total: 3}, nil)); !errors.Is(err, errMalformed) {
		t.Errorf("chunk numbered past its total: err %v, want %v", err, errMalformed)
	}
}

func TestDecodeChunkBomb(t *testing.T) {
	var buf bytes.Buffer
	buf.Write(appendHeader(nil, header{Kind: kindChunk, Sender: "s"}))
	buf.Write([]byte{1, 0, 1})
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	entry, _ := appendEntry(nil, &slotDelta{"l", "u", t0, minute, "", 1, 0}, "")
	block := bytes.Repeat(entry, 1<<16)
	for written := 0; written <= maxChunkRaw; written += len(block) {
		_, _ = fw.Write(block)
	}
	_ = fw.Close()
	if buf.Len() > maxChunkMsg {
		t.Fatalf("bomb of %d bytes, want one under maxChunkMsg", buf.Len())
	}
	n := 0
	_, _, err := decodeChunk(buf.Bytes(), 4096, func(ds []slotDelta) { n += len(ds) })
	if !errors.Is(err, errTooLarge) {
		t.Errorf("decodeChunk of a %d-byte bomb: err = %v, want %v", buf.Len(), err, errTooLarge)
	}
}

func FuzzDecodeDigest(f *testing.F) {
	f.Add(appendDigest(nil, header{Sender: "n0/aa"}, randomDigests(rand.New(rand.NewPCG(3, 4)))))
	f.Add(appendDigest(nil, header{Sender: "n0/aa"}, make([]bucketDigest, numBuckets)))
	f.Add([]byte{wireVersion, kindDigest << kindShift, 0, 1, 's'})
	f.Fuzz(func(t *testing.T, in []byte) {
		ds := make([]bucketDigest, numBuckets)
		h, err := decodeDigest(in, ds)
		if err != nil {
			return
		}
		again := make([]bucketDigest, numBuckets)
		if h2, err := decodeDigest(appendDigest(nil, h, ds), again); err != nil || h2 != h || !reflect.DeepEqual(again, ds) {
			t.Fatalf("round trip: header %+v err %v, want %+v", h2, err, h)
		}
	})
}

func FuzzDecodePull(f *testing.F) {
	p := &pullMsg{ID: 3}
	p.want(7)
	p.Have = []bucketDigest{{sum: 1, count: 2}}
	f.Add(appendPull(nil, header{Sender: "n0/aa"}, p))
	f.Add(appendPull(nil, header{Sender: "n0/aa"}, &pullMsg{}))
	f.Add([]byte{wireVersion, kindPull << kindShift, 0, 1, 's', 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, p, err := decodePull(in)
		if err != nil {
			return
		}
		h2, p2, err := decodePull(appendPull(nil, h, p))
		if err != nil || h2 != h || !reflect.DeepEqual(p2, p) {
			t.Fatalf("round trip: %+v %+v %v, want %+v %+v", h2, p2, err, h, p)
		}
	})
}

func FuzzDecodeChunk(f *testing.F) {
	h := header{Kind: kindChunk, SentAt: 42, Sender: "n0/aa"}
	f.Add(encodeChunk(f, h, chunkHead{ID: 1, Seq: 0, Total: 1}, sampleDeltas()))
	f.Add(encodeChunk(f, h, chunkHead{ID: 1}, nil))
	f.Add([]byte{wireVersion, kindChunk << kindShift, 0, 1, 's', 1, 0, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, c, ds, err := collectChunk(in)
		if err != nil {
			return
		}
		h2, c2, again, err := collectChunk(encodeChunk(t, h, c, ds))
		if err != nil || h2 != h || c2 != c || len(again) != len(ds) || (len(ds) > 0 && !reflect.DeepEqual(again, ds)) {
			t.Fatalf("round trip: %+v %+v %+v %v, want %+v %+v %+v", h2, c2, again, err, h, c, ds)
		}
	})
}
