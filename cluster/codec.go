package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire format, version 1. Every integer is a varint; every string is a
// uvarint length followed by that many bytes, with a fixed upper bound.
//
//	header  = version:byte flags:byte sentAt:zigzag-varint(unix ms) sender:string
//	delta   = header entry*
//	entry   = limit:string user:string start:zigzag-varint size:uvarint replica:string P:uvarint N:uvarint
//
// flags holds the relay bit and the message kind (bits 1-2): a delta, or one
// of the anti-entropy messages of codec_ae.go (a digest, a pull request, a
// chunk of buckets). Deltas are unchanged since the first release, whose
// decoders ignore the kind bits: during a rolling upgrade deltas flow both
// ways, and only anti-entropy waits until both ends run this version (the
// older full state and the newer digest refuse each other, counted as
// malformed). Entries run to the end of the message; there is no
// count, so a decoder never allocates from a claimed size. An empty replica
// means the sender's. A delta message is one UDP packet.
const (
	wireVersion = 1
	flagRelay   = 1 << 0 // receivers pass newer slots on through their gossip queue
	kindShift   = 1
	kindMask    = 3 << kindShift

	maxLimitLen   = 128
	maxUserLen    = 512
	maxReplicaLen = 255

	// maxEntryLen bounds one encoded entry: strings plus three 10-byte and
	// two <=10-byte varints and three length prefixes.
	maxEntryLen = maxLimitLen + maxUserLen + maxReplicaLen + 5*binary.MaxVarintLen64 + 3*2
	// maxHeaderLen bounds the message header.
	maxHeaderLen = 2 + binary.MaxVarintLen64 + 2 + maxReplicaLen
	// packetBudget is the largest delta message we build: a UDP packet of
	// memberlist's 1,400-byte UDPBufferSize minus room for its framing,
	// CRC, label and encryption (about 60 bytes at worst).
	packetBudget = 1300
	// maxDeltaMsg is the largest delta message we accept (a UDP datagram).
	maxDeltaMsg = 64 << 10
)

// Message kinds (flags bits 1-2).
const (
	kindDelta  = 0 // slot values: gossip and direct sends
	kindDigest = 1 // bucket digests: the push/pull state
	kindPull   = 2 // a request for buckets that differ
	kindChunk  = 3 // part of the answer to a pull: the slots of some buckets
)

// Decode errors; dropReason maps them to metric labels.
var (
	errMalformed = errors.New("malformed gossip message")
	errVersion   = errors.New("unknown gossip message version")
	errTooLarge  = errors.New("gossip message too large")
)

// slotDelta is the absolute value of one slot of one counter key, as gossiped.
type slotDelta struct {
	Limit, User string
	Start, Size int64 // window start (unix ms) and size (ms)
	Replica     string
	P, N        uint64
}

// header starts every message.
type header struct {
	Relay  bool
	Kind   byte   // kindDelta, kindDigest, kindPull or kindChunk
	SentAt int64  // sender's clock, unix ms
	Sender string // sender's replica ID
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendHeader appends h's encoding to b.
func appendHeader(b []byte, h header) []byte {
	flags := h.Kind << kindShift & kindMask
	if h.Relay {
		flags |= flagRelay
	}
	b = append(b, wireVersion, flags)
	b = binary.AppendVarint(b, h.SentAt)
	return appendString(b, h.Sender)
}

// appendSlotKey appends the part of d's entry that names its slot (all but P
// and N); a replica equal to sender is written as empty.
func appendSlotKey(b []byte, d *slotDelta, sender string) ([]byte, error) {
	if len(d.Limit) > maxLimitLen || len(d.User) > maxUserLen || len(d.Replica) > maxReplicaLen {
		return b, fmt.Errorf("encode slot %q/%q: %w", d.Limit, d.User, errTooLarge)
	}
	b = appendString(b, d.Limit)
	b = appendString(b, d.User)
	b = binary.AppendVarint(b, d.Start)
	b = binary.AppendUvarint(b, uint64(d.Size))
	if d.Replica == sender {
		return appendString(b, ""), nil
	}
	return appendString(b, d.Replica), nil
}

// appendEntry appends d's entry to b; on error b is returned unchanged.
func appendEntry(b []byte, d *slotDelta, sender string) ([]byte, error) {
	n := len(b)
	b, err := appendSlotKey(b, d, sender)
	if err != nil {
		return b[:n], err
	}
	b = binary.AppendUvarint(b, d.P)
	return binary.AppendUvarint(b, d.N), nil
}

// packDeltas encodes ds into messages of at most budget bytes each; entries
// that cannot be encoded at all are skipped and counted.
func packDeltas(h header, ds []slotDelta, budget int) (msgs [][]byte, skipped int) {
	hdr := appendHeader(nil, h)
	var cur, entry []byte
	for i := range ds {
		var err error
		if entry, err = appendEntry(entry[:0], &ds[i], h.Sender); err != nil || len(hdr)+len(entry) > budget {
			skipped++
			continue
		}
		if len(cur)+len(entry) > budget {
			msgs = append(msgs, cur)
			cur = nil
		}
		if cur == nil {
			cur = append(make([]byte, 0, budget), hdr...)
		}
		cur = append(cur, entry...)
	}
	if cur != nil {
		msgs = append(msgs, cur)
	}
	return msgs, skipped
}

// reader decodes the wire format from a byte stream. Every read is bounded:
// strings by their fixed maximum and by the bytes actually present.
type reader struct {
	r interface {
		io.ByteScanner
		io.Reader
	}
	scratch [maxUserLen]byte
	sender  string
	prevLim string // dedup repeated strings: one allocation per distinct run
	prevRep string
}

func (r *reader) uvarint() (uint64, error) {
	v, err := binary.ReadUvarint(r.r)
	if err != nil {
		return 0, errMalformed
	}
	return v, nil
}

func (r *reader) varint() (int64, error) {
	v, err := binary.ReadVarint(r.r)
	if err != nil {
		return 0, errMalformed
	}
	return v, nil
}

// str reads a string of at most limit bytes, reusing prev when equal.
func (r *reader) str(limit int, prev string) (string, error) {
	n, err := r.uvarint()
	if err != nil || n > uint64(limit) {
		return "", errMalformed
	}
	b := r.scratch[:n]
	if _, err := io.ReadFull(r.r, b); err != nil {
		return "", errMalformed
	}
	if string(b) == prev {
		return prev, nil
	}
	return string(b), nil
}

func (r *reader) header() (header, error) {
	v, err := r.r.ReadByte()
	if err != nil {
		return header{}, errMalformed
	}
	if v != wireVersion {
		return header{}, errVersion
	}
	flags, err := r.r.ReadByte()
	if err != nil {
		return header{}, errMalformed
	}
	var h header
	h.Relay = flags&flagRelay != 0
	h.Kind = flags & kindMask >> kindShift
	if h.SentAt, err = r.varint(); err != nil {
		return header{}, err
	}
	if h.Sender, err = r.str(maxReplicaLen, ""); err != nil || h.Sender == "" {
		return header{}, errMalformed
	}
	r.sender, r.prevRep = h.Sender, h.Sender
	return h, nil
}

// entry reads one entry into d; io.EOF means a clean end of message.
func (r *reader) entry(d *slotDelta) error {
	if _, err := r.r.ReadByte(); err == io.EOF {
		return io.EOF // nothing left: a clean end between entries
	} else if err != nil {
		return errMalformed
	}
	_ = r.r.UnreadByte()
	var err error
	if d.Limit, err = r.str(maxLimitLen, r.prevLim); err != nil {
		return err
	}
	r.prevLim = d.Limit
	if d.User, err = r.str(maxUserLen, ""); err != nil {
		return err
	}
	if d.Start, err = r.varint(); err != nil {
		return err
	}
	size, err := r.uvarint()
	if err != nil || size == 0 || size > maxWindowMs {
		return errMalformed
	}
	d.Size = int64(size)
	if d.Replica, err = r.str(maxReplicaLen, r.prevRep); err != nil {
		return err
	}
	if d.Replica == "" {
		d.Replica = r.sender
	}
	r.prevRep = d.Replica
	if d.P, err = r.uvarint(); err != nil {
		return err
	}
	d.N, err = r.uvarint()
	return err
}

// decodeDeltas decodes one delta message. Malformed input returns an error
// wrapping errMalformed, errVersion or errTooLarge; it never panics, and it
// allocates in proportion to len(buf) only.
func decodeDeltas(buf []byte) (header, []slotDelta, error) {
	if len(buf) > maxDeltaMsg {
		return header{}, nil, errTooLarge
	}
	br := bytes.NewReader(buf)
	r := reader{r: br}
	h, err := r.header()
	if err != nil {
		return header{}, nil, err
	}
	if h.Kind != kindDelta {
		return header{}, nil, errMalformed
	}
	var ds []slotDelta
	for {
		var d slotDelta
		switch err := r.entry(&d); err {
		case nil:
			ds = append(ds, d)
		case io.EOF:
			return h, ds, nil
		default:
			return header{}, nil, err
		}
	}
}
