package httpapi

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolveClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, tt := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer, no header", "203.0.113.1:4000", nil, "203.0.113.1"},
		{"untrusted peer's header is ignored", "203.0.113.1:4000", []string{"198.51.100.7"}, "203.0.113.1"},
		{"trusted peer without header", "10.0.0.2:4000", nil, "10.0.0.2"},
		{"trusted peer", "10.0.0.2:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"right-most untrusted", "10.0.0.2:4000", []string{"1.1.1.1, 198.51.100.7, 10.9.9.9"}, "198.51.100.7"},
		{"forged left part is ignored", "10.0.0.2:4000", []string{"evil, 1.2.3.4, 198.51.100.7"}, "198.51.100.7"},
		{"header lines in order", "10.0.0.2:4000", []string{"1.2.3.4", "198.51.100.7, 10.1.1.1"}, "198.51.100.7"},
		{"all trusted: the left-most", "10.0.0.2:4000", []string{"10.3.3.3, 10.4.4.4"}, "10.3.3.3"},
		{"garbage stops at the last good hop", "10.0.0.2:4000", []string{"198.51.100.7, garbage, 10.4.4.4"}, "10.4.4.4"},
		{"port in the header", "10.0.0.2:4000", []string{"198.51.100.7:5555"}, "198.51.100.7"},
		{"ipv6 in brackets", "10.0.0.2:4000", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"ipv6 peer", "[fd00::1]:4000", []string{"2001:db8::2"}, "2001:db8::2"},
		{"mapped ipv4", "[::ffff:10.0.0.2]:4000", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
		{"empty entries", "10.0.0.2:4000", []string{" , ,198.51.100.7,"}, "198.51.100.7"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, resolveClientAddr(tt.peer, tt.xff, trusted).String())
		})
	}
	assert.False(t, resolveClientAddr("not an address", []string{"1.2.3.4"}, trusted).IsValid())
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,::ffff:172.16.0.0/108,")
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("172.16.0.0/12"),
	}, got)
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0/8"} {
		_, err := ParseCIDRs(bad)
		assert.Error(t, err, bad)
	}
}

func TestAddrKey(t *testing.T) {
	assert.Equal(t, "192.0.2.1", addrKey(netip.MustParseAddr("192.0.2.1")))
	assert.Equal(t, "2001:db8:1:2::/64", addrKey(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")))
	assert.Equal(t, "unknown", addrKey(netip.Addr{}))
}

func TestKeyedLimiterForgetsRefilledBucketsAndStaysBounded(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newKeyedLimiter(10, 2, 1000)
	l.now = func() time.Time { return now }

	ok, _ := l.allow("a")
	require.True(t, ok)
	ok, _ = l.allow("a")
	require.True(t, ok)
	ok, wait := l.allow("a")
	require.False(t, ok, "burst of 2")
	assert.Equal(t, 100*time.Millisecond, wait)
	assert.Equal(t, "1", retryAfter(wait))
	assert.Equal(t, "3", retryAfter(2100*time.Millisecond))

	// Thousands of one-off clients: the map stays within its bound.
	for i := range 5000 {
		l.allow("k" + strconv.Itoa(i))
		require.LessOrEqual(t, l.len(), 1000)
	}
	// Once they have refilled (0.2 s), further calls forget them, two per
	// call, without any sweeper.
	now = now.Add(time.Second)
	for i := range 600 {
		l.allow("steady" + strconv.Itoa(i%3))
	}
	assert.LessOrEqual(t, l.len(), 3, "refilled buckets are forgotten")

	// An active, empty bucket is not forgotten by the sweep: its client
	// cannot reset its limit by waiting for eviction.
	l = newKeyedLimiter(1, 1, 1000)
	l.now = func() time.Time { return now }
	ok, _ = l.allow("busy")
	require.True(t, ok)
	for i := range 100 {
		l.allow("other" + strconv.Itoa(i))
	}
	ok, _ = l.allow("busy")
	assert.False(t, ok)
}

// FuzzClientAddr: any X-Forwarded-For is handled without a panic, and the
// client is one of the addresses seen: the peer or a listed one, never an
// address from left of the first untrusted hop.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.0.0.2:4000", "198.51.100.7, 10.9.9.9")
	f.Add("10.0.0.2:4000", "evil, 1.2.3.4,198.51.100.7")
	f.Add("[fd00::1]:80", "[2001:db8::1]:443,::ffff:1.2.3.4")
	f.Add("203.0.113.1:1", "1.1.1.1")
	f.Add("10.0.0.2:4000", ",,,")
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	f.Fuzz(func(t *testing.T, peer, xff string) {
		got := resolveClientAddr(peer, []string{xff}, trusted)
		p := parseAddr(peer)
		if !p.IsValid() || !isTrusted(p, trusted) {
			if got != p {
				t.Fatalf("untrusted peer %q: got %v", peer, got)
			}
			return
		}
		if got == p {
			return
		}
		// got is listed, and every hop right of it is a trusted proxy.
		hops := strings.Split(xff, ",")
		for i := len(hops) - 1; i >= 0; i-- {
			h := strings.TrimSpace(hops[i])
			if h == "" {
				continue
			}
			a := parseAddr(h)
			if a == got {
				return
			}
			if !a.IsValid() || !isTrusted(a, trusted) {
				t.Fatalf("peer %q, X-Forwarded-For %q: got %v, beyond the untrusted or bad hop %q", peer, xff, got, h)
			}
		}
		t.Fatalf("peer %q, X-Forwarded-For %q: got %v, which is not listed", peer, xff, got)
	})
}

// TestBodyDeadlineIsLiftedOnceTheBodyIsRead: a handler that has read its
// body and then works longer than the body deadline (a database write, say)
// keeps a live request context. net/http reads the connection in the
// background once the body is done; a deadline left behind would fail that
// read and cancel the context.
func TestBodyDeadlineIsLiftedOnceTheBodyIsRead(t *testing.T) {
	const timeout = 100 * time.Millisecond
	s := New(Config{BodyReadTimeout: timeout}, nil, nil)
	srv := httptest.NewServer(s.harden(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-r.Context().Done():
			http.Error(w, "request context canceled", http.StatusInternalServerError)
		case <-time.After(4 * timeout):
			w.WriteHeader(http.StatusNoContent)
		}
	})))
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL, "application/json", strings.NewReader(`{"a":1}`))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusNoContent, resp.StatusCode, "%s", body)
}

// tcpPeer is a connection from addr, for ConnContext.
type tcpPeer struct {
	net.Conn
	addr *net.TCPAddr
}

func (c tcpPeer) RemoteAddr() net.Addr { return c.addr }

// A request whose client is its peer carries the address in the context
// ConnContext made for its connection: it is not copied for it (the copy
// and its context cost about 400 bytes for as long as a stream lasts).
// One that a trusted proxy forwards is, with the forwarded address.
func TestClientAddrOfThePeerNeedsNoCopyOfTheRequest(t *testing.T) {
	s := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, nil, nil)
	request := func(peer string, forwardedFor string) *http.Request {
		ap := netip.MustParseAddrPort(peer)
		ctx := s.ConnContext(t.Context(), tcpPeer{addr: net.TCPAddrFromAddrPort(ap)})
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/events/projects", nil)
		r.RemoteAddr = peer
		if forwardedFor != "" {
			r.Header.Set("X-Forwarded-For", forwardedFor)
		}
		return r
	}

	r := request("192.0.2.7:4000", "")
	got := s.withClientAddr(r)
	assert.Same(t, r, got, "the peer is the client: no copy")
	assert.Equal(t, netip.MustParseAddr("192.0.2.7"), ClientAddr(got))

	r = request("10.1.2.3:4000", "198.51.100.9")
	got = s.withClientAddr(r)
	assert.NotSame(t, r, got)
	assert.Equal(t, netip.MustParseAddr("198.51.100.9"), ClientAddr(got), "a trusted proxy speaks for its client")

	r = request("192.0.2.7:4000", "198.51.100.9")
	assert.Same(t, r, s.withClientAddr(r), "an untrusted peer's X-Forwarded-For is ignored")
	assert.Equal(t, netip.MustParseAddr("192.0.2.7"), ClientAddr(s.withClientAddr(r)))
}
