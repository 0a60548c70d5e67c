package shard

import (
	"hash/fnv"
)

// Owner returns the member that owns key among members (rendezvous or
// highest-random-weight hashing), or "" when there are none. Every member
// computes it alone; members that see the same set agree. Removing a member
// moves only its keys; adding one moves to it only the keys it wins.
func Owner(key string, members []string) string {
	var best string
	var bestScore uint64
	for _, m := range members {
		s := score(m, key)
		if best == "" || s > bestScore || (s == bestScore && m < best) {
			best, bestScore = m, s
		}
	}
	return best
}

// score hashes member and key together. FNV-1a alone spreads similar
// inputs poorly in its high bits, so its sum goes through splitmix64's
// finalizer.
func score(member, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
