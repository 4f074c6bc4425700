//go:build !unix

package proxy

import "net"

// peeker is checkedConn's buffer where connections cannot be peeked at.
type peeker struct{ buf [1]byte }

func newCheckedConn(c net.Conn) *checkedConn { return &checkedConn{Conn: c} }

// idleClean cannot peek on this platform: it reads briefly (probeIdle).
func (c *checkedConn) idleClean() bool { return probeIdle(c.Conn, c.buf[:]) }

// nowReader reads without waiting; there is none on this platform.
type nowReader struct{}

// newNowReader is nil: tlsWire falls back to brief reads (readBriefly).
func newNowReader(net.Conn) *nowReader { return nil }

func (*nowReader) read([]byte) (int, error) { return 0, errWouldBlock }
