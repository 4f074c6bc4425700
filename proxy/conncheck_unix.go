//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// peeker is the unix half of checkedConn: the connection's raw descriptor
// and the result of the last peek, kept on the connection so a check
// allocates nothing.
type peeker struct {
	raw    syscall.RawConn // nil: the connection has no descriptor (a proxy tunnel); never checked
	peekFn func(fd uintptr) bool
	n      int
	err    error
	buf    [1]byte
}

func newCheckedConn(c net.Conn, tls bool) *checkedConn {
	cc := &checkedConn{Conn: c, tls: tls}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			cc.raw = raw
			cc.peekFn = cc.peekFD
		}
	}
	return cc
}

// peekFD is one non-blocking recv(MSG_PEEK) on fd; nothing is consumed.
func (c *checkedConn) peekFD(fd uintptr) bool {
	c.n, _, c.err = syscall.Recvfrom(int(fd), c.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true
}

// idleClean reports whether nothing has arrived on the idle connection: no
// bytes and no EOF.
func (c *checkedConn) idleClean() bool {
	if c.raw == nil {
		return true
	}
	if err := c.raw.Read(c.peekFn); err != nil {
		return false
	}
	switch {
	case c.err == syscall.EAGAIN || c.err == syscall.EWOULDBLOCK:
		return true // nothing pending: a live, clean connection
	case c.err != nil, c.n == 0:
		return false // reset or EOF
	default:
		return c.tls // bytes pending: stray on plain HTTP
	}
}
