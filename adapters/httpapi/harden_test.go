package httpapi_test

// Browser and HTTP hardening over real HTTP on loopback: CORS, the
// per-address stream limit, trusted proxies, the publish rate limit and the
// body read deadline.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// do sends a request to the gateway with the given headers.
func (g *gateway) doWith(t *testing.T, method, path string, header http.Header, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, g.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	return resp, readBody(t, resp)
}

// metrics returns the text of GET /metrics.
func (g *gateway) metrics(t *testing.T) string {
	t.Helper()
	resp, body := g.get(t, "/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return body
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

const (
	allowedOrigin = "https://status.example.com"
	otherOrigin   = "https://evil.example.net"
)

func TestCORSPreflightForPostFromAListedOrigin(t *testing.T) {
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) {
		c.CORSOrigins = []string{allowedOrigin, "http://localhost:3000"}
	})
	resp, _ := g.doWith(t, http.MethodOptions, "/events", hdr(
		"Origin", allowedOrigin,
		"Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization,content-type",
	), "")
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.Equal(t, allowedOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
	assert.Equal(t, "POST", resp.Header.Get("Access-Control-Allow-Methods"))
	allowed := strings.ToLower(strings.Join(resp.Header.Values("Access-Control-Allow-Headers"), ","))
	assert.Contains(t, allowed, "authorization")
	assert.Contains(t, allowed, "content-type")
	assert.Contains(t, strings.Join(resp.Header.Values("Vary"), ","), "Origin")

	// The POST itself then carries the CORS headers on its answer.
	resp, body := g.doWith(t, http.MethodPost, "/events", hdr("Origin", allowedOrigin, "Content-Type", "application/json"), envelope("cors1", 1, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	assert.Equal(t, allowedOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
	assert.Contains(t, resp.Header.Values("Vary"), "Origin")

	// A header outside the list is not allowed by the preflight.
	resp, _ = g.doWith(t, http.MethodOptions, "/events", hdr(
		"Origin", allowedOrigin,
		"Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "x-forged",
	), "")
	assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
}

func TestCORSUnlistedOriginGetsNoCORSHeaders(t *testing.T) {
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) { c.CORSOrigins = []string{allowedOrigin} })
	for _, origin := range []string{otherOrigin, "null", "https://status.example.com.evil.net", "http://status.example.com"} {
		resp, _ := g.doWith(t, http.MethodOptions, "/events", hdr(
			"Origin", origin, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type"), "")
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"), origin)
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Credentials"), origin)
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Methods"), origin)

		resp, body := g.doWith(t, http.MethodGet, "/projects", hdr("Origin", origin), "")
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"), origin)
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Credentials"), origin)
		assert.Contains(t, resp.Header.Values("Vary"), "Origin", "a cache must not serve this answer to a listed origin")
	}
}

func TestCORSHeadersOnQueriesAndStreams(t *testing.T) {
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) { c.CORSOrigins = []string{allowedOrigin} })
	for _, path := range []string{"/projects", "/projects/none", "/healthz"} {
		resp, _ := g.doWith(t, http.MethodGet, path, hdr("Origin", allowedOrigin), "")
		assert.Equal(t, allowedOrigin, resp.Header.Get("Access-Control-Allow-Origin"), path)
		assert.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"), path)
	}

	// An SSE stream from a listed origin (EventSource withCredentials).
	s := g.openStream(t, "/events/projects/cors2", hdr("Origin", allowedOrigin))
	assert.Equal(t, allowedOrigin, s.resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Equal(t, "true", s.resp.Header.Get("Access-Control-Allow-Credentials"))
	assert.Contains(t, s.resp.Header.Values("Vary"), "Origin")
	resp, body := g.post(t, "application/json", envelope("cors2", 1, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	assert.Equal(t, "project_updated", s.next().Event, "the stream streams")

	// From an unlisted origin the stream works for non-browser clients but
	// says nothing that lets a browser page read it.
	s2 := g.openStream(t, "/events/projects/cors2", hdr("Origin", otherOrigin))
	assert.Empty(t, s2.resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Empty(t, s2.resp.Header.Get("Access-Control-Allow-Credentials"))

	// Retry-After of a refusal is readable by the page.
	assert.Contains(t, s.resp.Header.Get("Access-Control-Expose-Headers"), "Retry-After")
}

func TestNoCORSHeadersWithoutOrigins(t *testing.T) {
	g := newGateway(t, nil)
	resp, _ := g.doWith(t, http.MethodOptions, "/events", hdr(
		"Origin", allowedOrigin, "Access-Control-Request-Method", "POST"), "")
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "no preflight handling at all")
	assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
	resp, _ = g.doWith(t, http.MethodGet, "/projects", hdr("Origin", allowedOrigin), "")
	assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Empty(t, resp.Header.Get("Access-Control-Allow-Credentials"))
}

func TestParseOrigins(t *testing.T) {
	got, err := httpapi.ParseOrigins(" https://a.example.com, http://localhost:3000 ,,HTTPS://B.example.com")
	require.NoError(t, err)
	assert.Equal(t, []string{"https://a.example.com", "http://localhost:3000", "https://b.example.com"}, got)
	got, err = httpapi.ParseOrigins("")
	require.NoError(t, err)
	assert.Empty(t, got)
	for _, bad := range []string{"*", "https://*.example.com", "example.com", "https://a.example.com/", "https://a.example.com/x",
		"ftp://a.example.com", "null", "https://user@a.example.com", "https://a.example.com?x=1"} {
		_, err := httpapi.ParseOrigins(bad)
		assert.Error(t, err, bad)
	}
}

// requireTooMany asserts a 429 with Retry-After and a JSON error.
func requireTooMany(t *testing.T, resp *http.Response, body string) {
	t.Helper()
	requireJSONError(t, resp, body, http.StatusTooManyRequests)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
}

func TestMaxClientsPerIP(t *testing.T) {
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) { c.MaxClientsPerIP = 2 })
	a := g.openStream(t, "/events/projects", nil)
	g.openStream(t, "/events/projects/x", nil)

	for _, path := range []string{"/events/projects", "/events/projects/y", "/events?topic=projects:y"} {
		resp, body := g.doWith(t, http.MethodGet, path, nil, "")
		requireTooMany(t, resp, body)
		assert.Equal(t, "5", resp.Header.Get("Retry-After"))
		assert.Contains(t, body, "127.0.0.1")
	}
	// X-Forwarded-For from an untrusted peer changes nothing.
	resp, body := g.doWith(t, http.MethodGet, "/events/projects", hdr("X-Forwarded-For", "203.0.113.9"), "")
	requireTooMany(t, resp, body)

	assert.Contains(t, g.metrics(t), `statusbroadcaster_http_rejected_requests_total{reason="clients_per_ip"} 4`)

	// Other endpoints are not limited.
	resp, body = g.post(t, "application/json", envelope("perip", 1, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	resp, _ = g.get(t, "/projects")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// A stream that ends frees its slot.
	a.close()
	require.Eventually(t, func() bool { return g.api.OpenStreams() == 1 }, waitFor, time.Millisecond)
	g.openStream(t, "/events/projects", nil)
}

func TestTrustedProxySetsTheClientAddress(t *testing.T) {
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) {
		c.MaxClientsPerIP = 1
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	})
	g.openStream(t, "/events/projects", hdr("X-Forwarded-For", "203.0.113.7"))
	// The same client, through two of our proxies: the right-most
	// untrusted address is the client.
	resp, body := g.doWith(t, http.MethodGet, "/events/projects", hdr("X-Forwarded-For", "203.0.113.7, 10.1.2.3"), "")
	requireTooMany(t, resp, body)
	assert.Contains(t, body, "203.0.113.7")
	// A client that forges addresses on the left is still itself.
	resp, body = g.doWith(t, http.MethodGet, "/events/projects", hdr("X-Forwarded-For", "198.51.100.1, 203.0.113.7"), "")
	requireTooMany(t, resp, body)
	// Several header lines are one list.
	resp, body = g.doWith(t, http.MethodGet, "/events/projects", http.Header{"X-Forwarded-For": {"198.51.100.2", "203.0.113.7"}}, "")
	requireTooMany(t, resp, body)
	// Another client behind the proxy has a slot of its own.
	g.openStream(t, "/events/projects", hdr("X-Forwarded-For", "203.0.113.8"))
	// IPv6 clients count per /64.
	g.openStream(t, "/events/projects", hdr("X-Forwarded-For", "2001:db8:1:2::1"))
	resp, body = g.doWith(t, http.MethodGet, "/events/projects", hdr("X-Forwarded-For", "2001:db8:1:2:ffff::9"), "")
	requireTooMany(t, resp, body)
	g.openStream(t, "/events/projects", hdr("X-Forwarded-For", "2001:db8:1:3::1"))
	// The proxy itself, without the header, is a client too.
	g.openStream(t, "/events/projects", nil)
}

// rateLimited returns a gateway with a publish rate limit, serving the API
// behind auth, a stand-in for an authentication middleware that puts the
// token subject in the request context.
func rateLimited(t *testing.T, perSecond float64, burst int, trusted ...netip.Prefix) (*gateway, *http.Client, string) {
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) {
		c.PublishRate, c.PublishBurst, c.TrustedProxies = perSecond, burst, trusted
	})
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sub := r.Header.Get("X-Test-Subject"); sub != "" {
			r = r.WithContext(httpapi.WithRateLimitKey(r.Context(), sub))
		}
		g.api.ServeHTTP(w, r)
	}))
	t.Cleanup(auth.Close)
	return g, auth.Client(), auth.URL
}

func postAs(t *testing.T, c *http.Client, base string, header http.Header, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/events", strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	require.NoError(t, err)
	return resp, readBody(t, resp)
}

func TestPublishRateLimitPerAddress(t *testing.T) {
	// 0.5/s: a token every 2 s, far longer than four requests take even
	// on a loaded machine.
	g, c, base := rateLimited(t, 0.5, 3, netip.MustParsePrefix("127.0.0.1/32"))
	s := g.openStream(t, "/events/projects/rate", nil)
	for v := 1; v <= 3; v++ {
		resp, body := postAs(t, c, base, nil, envelope("rate", v, ""))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "burst of 3: POST %d: %s", v, body)
	}
	resp, body := postAs(t, c, base, nil, envelope("rate", 4, ""))
	requireTooMany(t, resp, body)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"), "0.5/s: a token within 2 s")
	assert.Contains(t, body, "rate limit")
	assert.Contains(t, g.metrics(t), `statusbroadcaster_http_rejected_requests_total{reason="publish_rate"} 1`)
	// Another client address (behind the trusted proxy) has its own bucket.
	resp, body = postAs(t, c, base, hdr("X-Forwarded-For", "203.0.113.5"), envelope("rate", 5, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	for v := 1; v <= 3; v++ {
		assert.Equal(t, fmt.Sprintf("app-%d", v), name(t, s.next()))
	}
	assert.Equal(t, "app-5", name(t, s.next()), "the refused event was never broadcast")

	// After Retry-After, a token is back.
	time.Sleep(2 * time.Second)
	resp, body = postAs(t, c, base, nil, envelope("rate", 6, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
}

func TestPublishRateLimitPerSubject(t *testing.T) {
	_, c, base := rateLimited(t, 0.5, 1)
	resp, body := postAs(t, c, base, hdr("X-Test-Subject", "alice"), envelope("sub", 1, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	resp, body = postAs(t, c, base, hdr("X-Test-Subject", "alice"), envelope("sub", 2, ""))
	requireTooMany(t, resp, body)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"), "0.5/s: the next token in 2 s")
	// Same address, another subject: its own bucket.
	resp, body = postAs(t, c, base, hdr("X-Test-Subject", "bob"), envelope("sub", 3, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	// Without a subject, the address: also its own bucket.
	resp, body = postAs(t, c, base, nil, envelope("sub", 4, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	resp, body = postAs(t, c, base, nil, envelope("sub", 5, ""))
	requireTooMany(t, resp, body)
}

// With authorization on, the rate limit counts a token's subject, not its
// address: two subjects on one address have a bucket each, and a second
// token of the same subject shares the first one's.
func TestPublishRateLimitPerTokenSubject(t *testing.T) {
	v := newVerifier(t)
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) {
		c.Auth, c.PublishRate, c.PublishBurst = v, 0.5, 1
	})
	token := func(sub string) string {
		tok, err := jwtauth.SignHS256(authSecret, jwtauth.Grant{Subject: sub, Publish: []string{"projects:*"}, TTL: time.Hour})
		require.NoError(t, err)
		return tok
	}
	alice, alice2, bob := token("alice"), token("alice"), token("bob")
	resp, body := g.do(t, http.MethodPost, "/events", alice, envelope("tok", 1, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	resp, body = g.do(t, http.MethodPost, "/events", alice2, envelope("tok", 2, ""))
	requireTooMany(t, resp, body)
	resp, body = g.do(t, http.MethodPost, "/events", bob, envelope("tok", 3, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
}

func TestNoPublishRateLimitByDefault(t *testing.T) {
	g := newGateway(t, nil)
	for v := range 200 {
		resp, body := g.post(t, "application/json", envelope("free", v+1, ""))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	}
}

func name(t *testing.T, ev sseEvent) string {
	t.Helper()
	_, rest, ok := strings.Cut(ev.Data, `"name":"`)
	require.True(t, ok, ev.Data)
	n, _, _ := strings.Cut(rest, `"`)
	return n
}

// rawPost opens a connection and sends the head of a POST /events whose
// body of n bytes is sent later by the caller.
func rawPost(t *testing.T, addr string, n int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = fmt.Fprintf(conn, "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", n)
	require.NoError(t, err)
	return conn
}

// dribble writes p one byte every interval until it is written or the
// server cuts the connection.
func dribble(conn net.Conn, p []byte, interval time.Duration) {
	for _, b := range p {
		if _, err := conn.Write([]byte{b}); err != nil {
			return
		}
		time.Sleep(interval)
	}
}

func TestSlowBodyIsCutAtTheReadDeadline(t *testing.T) {
	const timeout = 2 * time.Second
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) { c.BodyReadTimeout = timeout })
	addr := g.srv.Listener.Addr().String()
	body := []byte(envelope("slow", 1, ""))
	s := g.openStream(t, "/events/projects", nil)

	const dribblers = 20
	cut := make(chan time.Duration, dribblers)
	answers := make(chan string, dribblers)
	var wg sync.WaitGroup
	for range dribblers {
		conn := rawPost(t, addr, len(body))
		start := time.Now()
		wg.Go(func() { dribble(conn, body, 100*time.Millisecond) })
		wg.Go(func() {
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				answers <- resp.Status + " " + string(b)
			}
			_, _ = io.Copy(io.Discard, conn) // until the server closes
			cut <- time.Since(start)
		})
	}
	// Meanwhile other clients are served at once.
	for v := 1; v <= 20; v++ {
		start := time.Now()
		resp, b := g.post(t, "application/json", envelope("fast", v, ""))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, b)
		assert.Less(t, time.Since(start), timeout/2, "a normal POST waits for no dribbler (typically a few ms)")
		assert.Equal(t, fmt.Sprintf("app-%d", v), name(t, s.next()))
	}
	for range dribblers {
		select {
		case d := <-cut:
			assert.GreaterOrEqual(t, d, timeout-50*time.Millisecond, "not before the deadline")
			assert.Less(t, d, timeout+3*time.Second, "cut at the deadline (generous for a loaded machine)")
		case <-time.After(waitFor):
			require.FailNow(t, "a dribbling client was never cut")
		}
	}
	wg.Wait()
	close(answers)
	for a := range answers {
		assert.Contains(t, a, "408 Request Timeout")
		assert.Contains(t, a, `"error"`)
	}
	s.quiet(100 * time.Millisecond) // nothing of the dribblers was broadcast
	assert.Contains(t, g.metrics(t), fmt.Sprintf(`statusbroadcaster_http_rejected_requests_total{reason="body_timeout"} %d`, dribblers))
}
