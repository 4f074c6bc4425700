//go:build unix

package proxy

import (
	"io"
	"net"
	"syscall"
)

// peeker is the unix half of checkedConn: the connection's raw descriptor
// and the result of the last peek, kept on the connection so a check
// allocates nothing.
type peeker struct {
	raw    syscall.RawConn // nil: the connection has no descriptor; checked with probeIdle
	peekFn func(fd uintptr) bool
	n      int
	err    error
	buf    [1]byte
}

func newCheckedConn(c net.Conn) *checkedConn {
	cc := &checkedConn{Conn: c}
	if raw := rawConnOf(c); raw != nil {
		cc.raw = raw
		cc.peekFn = cc.peekFD
	}
	return cc
}

// rawConnOf is c's raw descriptor, or nil when it has none.
func rawConnOf(c net.Conn) syscall.RawConn {
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			return raw
		}
	}
	return nil
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
		return probeIdle(c.Conn, c.buf[:])
	}
	if err := c.raw.Read(c.peekFn); err != nil {
		return false
	}
	switch {
	case c.err == syscall.EAGAIN || c.err == syscall.EWOULDBLOCK:
		return true // nothing pending: a live, clean connection
	default:
		return false // reset, EOF, or bytes nobody asked for
	}
}

// nowReader reads from a connection's descriptor without ever waiting:
// what has arrived, or errWouldBlock. It is the unix half of tlsWire.
type nowReader struct {
	raw    syscall.RawConn
	readFn func(fd uintptr) bool
	p      []byte
	n      int
	err    error
}

// newNowReader is a nowReader on c's descriptor, or nil when c has none.
func newNowReader(c net.Conn) *nowReader {
	raw := rawConnOf(c)
	if raw == nil {
		return nil
	}
	r := &nowReader{raw: raw}
	r.readFn = r.readFD
	return r
}

// readFD is one non-blocking read(2) on fd into r.p.
func (r *nowReader) readFD(fd uintptr) bool {
	for {
		r.n, r.err = syscall.Read(int(fd), r.p)
		if r.err != syscall.EINTR {
			return true
		}
	}
}

// read reads what has already arrived into p: (0, errWouldBlock) when
// nothing has, (0, io.EOF) when the peer closed. The connection's read
// deadline must not have passed.
func (r *nowReader) read(p []byte) (int, error) {
	r.p = p
	err := r.raw.Read(r.readFn)
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.err == syscall.EAGAIN || r.err == syscall.EWOULDBLOCK:
		return 0, errWouldBlock
	case r.err != nil:
		return 0, r.err
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}
