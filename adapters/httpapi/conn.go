package httpapi

import (
	"context"
	"net"
)

// connKey is the context key of the connection a request arrived on.
type connKey struct{}

// ConnContext records the connection in the context of its requests, so
// that a stream can size the connection's socket send buffer (see
// Config.StreamSendBuffer), and the peer's address, so that a request
// whose client is its peer (no trusted proxy speaks for another) needs no
// copy of its own to carry its ClientAddr. Set it as the http.Server's
// ConnContext.
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	ctx = context.WithValue(ctx, connKey{}, c)
	if ra := c.RemoteAddr(); ra != nil { // a custom listener may not know it
		if peer := parseAddr(ra.String()); peer.IsValid() {
			ctx = context.WithValue(ctx, clientAddrKey{}, peer)
		}
	}
	return ctx
}

// limitSendBuffer sets the socket send buffer of the connection of ctx to
// StreamSendBuffer bytes, if the server knows the connection and the
// limit is on. Left to itself, Linux grows a socket's send buffer up to
// 4 MiB: a client that stops reading would absorb megabytes of events,
// each written to it one write at a time (for a crowd of such clients,
// most of the server's CPU) before its stream is seen as stalled — and
// hold them in kernel memory.
func (s *Server) limitSendBuffer(ctx context.Context) {
	if s.cfg.StreamSendBuffer <= 0 {
		return
	}
	type writeBufferSetter interface{ SetWriteBuffer(bytes int) error }
	conn, _ := ctx.Value(connKey{}).(net.Conn)
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = tc.NetConn() // TLS: the socket under it
	}
	if c, ok := conn.(writeBufferSetter); ok {
		_ = c.SetWriteBuffer(s.cfg.StreamSendBuffer)
	}
}
