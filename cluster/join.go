package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	joinBackoffMin = 200 * time.Millisecond
	joinBackoffMax = 10 * time.Second
	resolveTimeout = 5 * time.Second
	defaultPort    = 7946
)

// joinLoop joins the seeds of cfg.Join, retrying with backoff until another
// member answers, and afterwards, every PushPullInterval, rejoins the seeds
// when the node finds itself alone and retries one failed member (as serf
// does), so partitions longer than memberlist's own dead-node gossip heal.
// It returns at Shutdown.
func (n *Node) joinLoop(ml *memberlist.Memberlist) {
	defer n.wg.Done()
	backoff := joinBackoffMin
	joined := false
	for {
		wait := n.cfg.PushPullInterval
		switch {
		case len(n.cfg.Join) > 0 && (!joined || n.members.alive() <= 1):
			if n.joinSeeds(ml) {
				joined, backoff = true, joinBackoffMin
				break
			}
			wait = backoff + rand.N(backoff/2)
			backoff = min(2*backoff, joinBackoffMax)
		default:
			if dead := n.members.dead(); len(dead) > 0 {
				addr := dead[rand.N(len(dead))]
				if _, err := ml.Join([]string{addr}); err == nil {
					n.log.Info().Str("address", addr).Msg("reconnected to failed member")
				}
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// joinSeeds resolves every seed and joins them; it reports whether the node
// now has another member.
func (n *Node) joinSeeds(ml *memberlist.Memberlist) bool {
	n.joinAttempts.Add(1)
	addrs := n.resolveSeeds()
	self := ml.LocalNode().Address()
	addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == self })
	if len(addrs) == 0 {
		// Every seed is this node (a one-replica Deployment, the first pod of a
		// headless Service): nobody else holds state, so there is nothing to wait for.
		if !n.ready.Swap(true) {
			n.log.Info().Msg("join list names only this node: ready alone")
		}
		return false
	}
	c, err := ml.Join(addrs)
	if err != nil || n.members.alive() <= 1 {
		if err != nil && isKeyMismatch(err.Error()) {
			// Say why at warn: a wrong key looks like a peer that never answers.
			if ok, suppressed := n.logLimit.allow("join: key mismatch"); ok {
				n.log.Warn().Err(err).Strs("seeds", addrs).Int("suppressed", suppressed).
					Msg("join cluster: the seeds refuse our gossip or we refuse theirs: cluster.secret_key must be the same on every replica (or absent on all, with cluster.insecure)")
			}
		}
		n.log.Debug().Err(err).Strs("seeds", addrs).Msg("join cluster: no peer yet, retrying")
		return false
	}
	n.log.Info().Int("contacted", c).Int("members", ml.NumMembers()).Msg("joined cluster")
	return true
}

// isKeyMismatch reports whether a memberlist error or log line says that the
// two ends of a gossip exchange do not share a key: one encrypts and the
// other does not, or their keys differ. memberlist has no typed errors for it.
func isKeyMismatch(msg string) bool {
	msg = strings.ToLower(msg)
	for _, s := range []string{
		"no installed keys could decrypt",     // a different key
		"encryption is not configured",        // they encrypt, we do not
		"remote state is not encrypted",       // we encrypt, they do not
		"decrypt packet failed",               // a UDP packet we cannot decrypt
		"encryption is configured but remote", // variants of the above
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// resolveSeeds turns every Join entry into ip:port addresses, one per A
// record of a DNS name. Entries without a port get 7946.
func (n *Node) resolveSeeds() []string {
	var out []string
	for _, seed := range n.cfg.Join {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			host, port = seed, strconv.Itoa(defaultPort)
		}
		if net.ParseIP(host) != nil {
			out = append(out, net.JoinHostPort(host, port))
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, resolveTimeout)
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		cancel()
		if err != nil {
			n.log.Debug().Err(err).Str("seed", seed).Msg("resolve join address")
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	return out
}

// resolveOne returns host if it is an IP, else its first address.
func resolveOne(host string) (string, error) {
	if net.ParseIP(host) != nil {
		return host, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return "", fmt.Errorf("resolve %q: %w", host, err)
	}
	return ips[0], nil
}
