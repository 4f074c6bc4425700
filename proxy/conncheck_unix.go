//go:build unix

package proxy

import (
	"net"
	"syscall"
)

func newCheckedConn(c net.Conn, tls bool) *checkedConn { return &checkedConn{Conn: c, tls: tls} }

// idleClean reports whether nothing has arrived on the idle connection: no
// bytes and no EOF. One non-blocking recv(MSG_PEEK); nothing is consumed.
func (c *checkedConn) idleClean() bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var (
		n    int
		rerr error
	)
	if err := raw.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), c.peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false
	}
	switch {
	case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK:
		return true // nothing pending: a live, clean connection
	case rerr != nil, n == 0:
		return false // reset or EOF
	default:
		return c.tls // bytes pending: stray on plain HTTP
	}
}
