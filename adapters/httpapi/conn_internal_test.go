package httpapi

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
)

// nilAddrConn is a connection that does not know its peer (net/http's
// conn.serve guards against a nil RemoteAddr for this reason).
type nilAddrConn struct{ net.Conn }

func (nilAddrConn) RemoteAddr() net.Addr { return nil }

// ConnContext runs in http.Server.Serve's accept loop, where a panic is
// not recovered: the whole process exits.
func TestConnContextWithoutRemoteAddr(t *testing.T) {
	s := New(Config{}, nil, nil)
	assert.NotPanics(t, func() { s.ConnContext(context.Background(), nilAddrConn{}) })
}
