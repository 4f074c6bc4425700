package cluster

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// Anti-entropy messages (antientropy.go). Each starts with the header of
// codec.go, its kind in the flags.
//
//	digest = header nb:uvarint (count:uvarint [sum:8 bytes LE if count > 0]) * nb
//	pull   = header id:uvarint nb:uvarint want:bitset(nb/8 bytes) (count:uvarint sum:8 bytes) * popcount(want)
//	chunk  = header id:uvarint seq:uvarint total:uvarint DEFLATE(entry*)
//
// A digest is the push/pull state: one (count, sum) per bucket, tens of
// kilobytes whatever the number of keys. A pull names the buckets wanted and
// the requester's digest of each (the peer skips those that have converged
// since). Chunks answer a pull, each under maxChunkMsg; total is 0 but on
// the last one, where it is the number of chunks of the answer. nb must be
// numBuckets: replicas built with another bucket count refuse each other's
// digests (reason version).
const (
	// chunkRaw is how many bytes of entries a chunk holds before compression
	// (about 90,000 slots; 1-2 MB compressed).
	chunkRaw = 4 << 20
	// maxChunkMsg is the largest chunk we accept, far under memberlist's
	// 20 MiB stream message limit; DEFLATE grows incompressible input by a
	// few bytes per 64 KiB block.
	maxChunkMsg = chunkRaw + chunkRaw/64 + 1024
	// maxChunkRaw caps a decompressed chunk (a DEFLATE bomb guard).
	maxChunkRaw = 2 * chunkRaw
	// maxDigestMsg bounds a digest: the header and one full entry per bucket.
	maxDigestMsg = maxHeaderLen + binary.MaxVarintLen64 + numBuckets*(binary.MaxVarintLen32+8)
	// maxPullMsg bounds a pull the same way.
	maxPullMsg = maxHeaderLen + 2*binary.MaxVarintLen64 + numBuckets/8 + numBuckets*(binary.MaxVarintLen32+8)
)

// appendDigest appends the digest message of ds (numBuckets long).
func appendDigest(b []byte, h header, ds []bucketDigest) []byte {
	h.Kind = kindDigest
	b = appendHeader(b, h)
	b = binary.AppendUvarint(b, numBuckets)
	for _, d := range ds {
		b = binary.AppendUvarint(b, uint64(d.count))
		if d.count > 0 {
			b = binary.LittleEndian.AppendUint64(b, d.sum)
		}
	}
	return b
}

// aeReader reads the fixed-size parts of anti-entropy messages.
type aeReader struct {
	reader
	br *bytes.Reader
}

func newAEReader(buf []byte, kind byte) (*aeReader, header, error) {
	br := bytes.NewReader(buf)
	r := &aeReader{reader: reader{r: br}, br: br}
	h, err := r.header()
	if err != nil {
		return nil, header{}, err
	}
	if h.Kind != kind {
		return nil, header{}, errMalformed
	}
	return r, h, nil
}

func (r *aeReader) buckets() error {
	nb, err := r.uvarint()
	if err != nil {
		return err
	}
	if nb != numBuckets {
		return fmt.Errorf("%d buckets, want %d: %w", nb, numBuckets, errVersion)
	}
	return nil
}

func (r *aeReader) digest(d *bucketDigest, withSum bool) error {
	c, err := r.uvarint()
	if err != nil || c > math.MaxUint32 {
		return errMalformed
	}
	d.count = uint32(c)
	if withSum || c > 0 {
		var b [8]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return errMalformed
		}
		d.sum = binary.LittleEndian.Uint64(b[:])
	}
	return nil
}

// decodeDigest decodes a digest message into ds (numBuckets long).
func decodeDigest(buf []byte, ds []bucketDigest) (header, error) {
	if len(buf) > maxDigestMsg {
		return header{}, errTooLarge
	}
	r, h, err := newAEReader(buf, kindDigest)
	if err != nil {
		return header{}, err
	}
	if err := r.buckets(); err != nil {
		return header{}, err
	}
	for i := range ds {
		ds[i] = bucketDigest{}
		if err := r.digest(&ds[i], false); err != nil {
			return header{}, err
		}
	}
	if r.br.Len() != 0 {
		return header{}, errMalformed
	}
	return h, nil
}

// pullMsg is a request for the slots of some buckets.
type pullMsg struct {
	ID   uint64
	Want [numBuckets / 8]byte // bit b: bucket b is wanted
	Have []bucketDigest       // the requester's digest of each wanted bucket, in bucket order
}

func (p *pullMsg) wants(b int) bool { return p.Want[b/8]&(1<<(b%8)) != 0 }
func (p *pullMsg) want(b int)       { p.Want[b/8] |= 1 << (b % 8) }

func appendPull(b []byte, h header, p *pullMsg) []byte {
	h.Kind = kindPull
	b = appendHeader(b, h)
	b = binary.AppendUvarint(b, p.ID)
	b = binary.AppendUvarint(b, numBuckets)
	b = append(b, p.Want[:]...)
	for _, d := range p.Have {
		b = binary.AppendUvarint(b, uint64(d.count))
		b = binary.LittleEndian.AppendUint64(b, d.sum)
	}
	return b
}

func decodePull(buf []byte) (header, *pullMsg, error) {
	if len(buf) > maxPullMsg {
		return header{}, nil, errTooLarge
	}
	r, h, err := newAEReader(buf, kindPull)
	if err != nil {
		return header{}, nil, err
	}
	p := &pullMsg{}
	if p.ID, err = r.uvarint(); err != nil {
		return header{}, nil, err
	}
	if err := r.buckets(); err != nil {
		return header{}, nil, err
	}
	if _, err := io.ReadFull(r.br, p.Want[:]); err != nil {
		return header{}, nil, errMalformed
	}
	n := 0
	for _, w := range p.Want {
		n += bits.OnesCount8(w)
	}
	if n > r.br.Len()/9 { // each digest takes at least 9 bytes: no allocation from a claim
		return header{}, nil, errMalformed
	}
	p.Have = make([]bucketDigest, n)
	for i := range p.Have {
		if err := r.digest(&p.Have[i], true); err != nil {
			return header{}, nil, err
		}
	}
	if r.br.Len() != 0 {
		return header{}, nil, errMalformed
	}
	return h, p, nil
}

// chunkHead is a chunk's place in the answer to a pull.
type chunkHead struct {
	ID    uint64 // the pull's
	Seq   uint64 // 0, 1, ...
	Total uint64 // 0, or on the last chunk the number of chunks
}

// chunkEncoder gathers the entries of one chunk of an answer: add entries
// until full, then compress raw (compressChunk) and start again.
type chunkEncoder struct {
	sender string
	raw    []byte
	entry  []byte
}

// add appends d's entry; entries that cannot be encoded are skipped and
// reported false.
func (e *chunkEncoder) add(d *slotDelta) bool {
	var err error
	if e.entry, err = appendEntry(e.entry[:0], d, e.sender); err != nil {
		return false
	}
	e.raw = append(e.raw, e.entry...)
	return true
}

func (e *chunkEncoder) full() bool { return len(e.raw) >= chunkRaw }

// compressChunk returns the chunk message c of the entries raw.
func compressChunk(h header, c chunkHead, raw []byte) ([]byte, error) {
	h.Kind = kindChunk
	out := appendHeader(make([]byte, 0, len(raw)/3+64), h)
	out = binary.AppendUvarint(out, c.ID)
	out = binary.AppendUvarint(out, c.Seq)
	out = binary.AppendUvarint(out, c.Total)
	buf := bytes.NewBuffer(out)
	fw, _ := flate.NewWriter(buf, flate.BestSpeed) // only fails on a bad level
	if _, err := fw.Write(raw); err != nil {
		return nil, fmt.Errorf("compress chunk: %w", err)
	}
	if err := fw.Close(); err != nil {
		return nil, fmt.Errorf("compress chunk: %w", err)
	}
	return buf.Bytes(), nil
}

// decodeChunk decodes a chunk, handing its entries to fn in slices of at
// most batch entries (fn must not keep the slice). On error, batches already
// handed stay handed: each entry is an absolute slot value, safe to merge
// alone.
func decodeChunk(buf []byte, batch int, fn func([]slotDelta)) (header, chunkHead, error) {
	if len(buf) > maxChunkMsg {
		return header{}, chunkHead{}, errTooLarge
	}
	r, h, err := newAEReader(buf, kindChunk)
	if err != nil {
		return header{}, chunkHead{}, err
	}
	var c chunkHead
	for _, v := range []*uint64{&c.ID, &c.Seq, &c.Total} {
		if *v, err = r.uvarint(); err != nil {
			return header{}, chunkHead{}, err
		}
	}
	if c.Total != 0 && c.Seq >= c.Total {
		return header{}, chunkHead{}, errMalformed
	}
	fr := flate.NewReader(r.br)
	defer fr.Close()
	lr := &io.LimitedReader{R: fr, N: maxChunkRaw + 1}
	er := reader{r: bufio.NewReaderSize(lr, 32<<10), sender: h.Sender, prevRep: h.Sender}
	ds := make([]slotDelta, 0, min(batch, len(buf)/4+1))
	for {
		var d slotDelta
		err := er.entry(&d)
		if err == nil {
			ds = append(ds, d)
			if len(ds) == batch {
				fn(ds)
				ds = ds[:0]
			}
			continue
		}
		if lr.N <= 0 {
			return h, c, errTooLarge
		}
		if err != io.EOF {
			return h, c, err
		}
		if len(ds) > 0 {
			fn(ds)
		}
		return h, c, nil
	}
}
