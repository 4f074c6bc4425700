package limiter

// DefaultEscrowThreshold is the escrow threshold used when Options.EscrowThreshold is 0.
const DefaultEscrowThreshold = 0.8

// escrowAllows reports whether the escrow (per-replica share) rule lets a replica reserve need
// more on a limit whose sliding usage, as this replica sees it, is used. The plain rule
// (used + need <= limit) has already passed, and replicas >= 2.
//
// The rule, with θ = Options.EscrowThreshold, L the limit, a = floor(θ·L) and N live replicas:
// below the threshold a replica admits freely; once the usage it sees has passed a, it may
// spend only its share of what it sees remaining:
//
//	used <= a   or   need <= ceil((L - used) / N)
//
// Why: gossip takes a while, so N replicas that each see remaining R can each admit up to R,
// N·R in all. Under the share rule a replica's admission takes at most a 1/N share of the
// remaining it sees, and it sees its own reservations at once, so each further admission takes
// a share of what is left: replicas converge to their shares instead of each taking everything.
//
// The bound. Take one limit and user, N >= 2 live replicas, and a period of one gossip delay D
// in which no replica sees another's new reservations, starting from a usage U0 >= a that all
// replicas see alike, R = L - U0. Let k be the most admissions any one replica makes on the
// key in the period and q = 1 - 1/N. The tokens A reserved cluster-wide in the period satisfy
//
//	A <= min(N·R, (1 - q^k)·N·(R + N - 1))
//
// Proof: each escrowed admission takes e <= ceil(R'/N) <= (R'+N-1)/N of the remaining R' the
// replica sees, so R'+N-1 shrinks by a factor of at least q each time. Special cases:
//   - one concurrent request per replica (k = 1, the classic race): A <= R + N - 1, at most
//     N-1 tokens over the limit;
//   - without the rule (θ >= 1): A <= N·R (with N = 1 there is no over-admission at all:
//     check-and-reserve is atomic on a replica);
//   - crossing the threshold: a replica whose view is at most a admits one request freely, so
//     from below the threshold add at most N·(a - U0 + S) - (a - U0) where S is the largest
//     request (the headroom each replica may take alone before it sees the others pass a);
//   - with k admissions per replica within one delay the bound tends to N·R: the rule bounds
//     concurrent bursts; a flood is bounded by how short the gossip delay is.
//
// The price: above the threshold a request must be small against the remaining, so near the
// limit large requests wait for usage to decay while small ones pass. Settlement adjusts
// reservations to true usage afterwards and is outside the bound; window roll-over only
// releases usage. Completion limits reserve nothing and are not escrowed.
func escrowAllows(c *climit, used, need int64, replicas int) bool {
	return used <= c.escrowAt || need <= ceilDiv(c.limit-used, int64(replicas))
}

// escrowShare returns the largest need escrowAllows admits above the threshold at usage used.
func escrowShare(c *climit, used int64, replicas int) int64 {
	return ceilDiv(max(c.limit-used, 0), int64(replicas))
}

// escrowTarget returns the largest sliding usage at which both the plain rule and escrowAllows
// admit need, or a negative number if no usage does (the request is larger than the share):
//
//	used <= L - need  and  (used <= a  or  used <= L - N·(need-1) - 1)
//
// the last because need <= ceil(R/N) exactly when R >= N·(need-1) + 1.
func escrowTarget(c *climit, need int64, replicas int) int64 {
	share := c.limit - int64(replicas)*(need-1) - 1
	if need == 0 {
		share = c.limit
	}
	return min(c.limit-need, max(c.escrowAt, share))
}
