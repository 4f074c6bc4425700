package cluster

import "encoding/binary"

// Deterministic hashing for anti-entropy. Every replica must place a key in
// the same bucket and give a slot value the same digest, so these hashes are
// fixed functions of the bytes (not hash/maphash, whose seed is per process).
// They are not collision resistant against a chosen input: a user who picks
// names that share a bucket only makes that bucket larger to repair.

const (
	hashSeed = 0x243f6a8885a308d3 // digits of pi
	hashMulA = 0x9e3779b97f4a7c15
	hashMulB = 0xbf58476d1ce4e5b9
)

// mix64 is splitmix64's finalizer: every input bit reaches every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= hashMulB
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hashString folds s into h, eight bytes at a time.
func hashString(h uint64, s string) uint64 {
	h ^= uint64(len(s)) * hashMulA
	for len(s) >= 8 {
		h = mix64(h ^ binary.LittleEndian.Uint64([]byte(s[:8])))
		s = s[8:]
	}
	var tail uint64
	for i := len(s) - 1; i >= 0; i-- {
		tail = tail<<8 | uint64(s[i])
	}
	return mix64(h ^ tail ^ hashMulA)
}

// keyHash names a counter key (limit, user, window start and size) on every
// replica alike: it picks the key's shard and anti-entropy bucket.
func keyHash(limit, user string, start, size int64) uint64 {
	h := hashString(hashSeed, limit)
	h = hashString(h, user)
	h = mix64(h ^ uint64(start))
	return mix64(h ^ uint64(size)*hashMulA)
}

// replicaHash names a replica ID in slot digests.
func replicaHash(replica string) uint64 { return hashString(hashSeed^hashMulB, replica) }

// slotHash is one slot value's part of its bucket's digest: a bucket's digest
// is the sum (mod 2^64) of the slotHash of every slot of its keys, so it is
// updated in O(1) as a slot grows and is the same on replicas holding the
// same slots, whatever the order they learnt them in.
func slotHash(kh, rh, p, n uint64) uint64 {
	x := mix64(kh ^ rh)
	x = mix64(x ^ p)
	return mix64(x ^ n*hashMulA)
}

// bucketOf is the anti-entropy bucket of a key hash.
func bucketOf(kh uint64) int { return int(kh>>32) % numBuckets }
