//go:build !unix

package proxy

import "net"

// peeker is empty where connections cannot be peeked at.
type peeker struct{}

func newCheckedConn(c net.Conn, tls bool) *checkedConn { return &checkedConn{Conn: c, tls: tls} }

// idleClean cannot peek on this platform; connections are reused unchecked.
func (c *checkedConn) idleClean() bool { return true }
