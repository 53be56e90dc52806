package httpapi_test

// Authorization over real HTTP on loopback: the real wiring with a
// jwtauth.Verifier as the Authenticator. 401 for every bad token on every
// protected endpoint, 403 for every request its grants do not cover
// whole, tokens read from header, query or cookie, streams that end when
// their token expires, nothing rejected broadcast, tokens never logged.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

var authSecret = []byte("httpapi-test-secret-httpapi-test-secret!")

// mint returns an HS256 token for the grants, valid for ttl.
func mint(t testing.TB, subscribe, publish []string, ttl time.Duration) string {
	t.Helper()
	tok, err := jwtauth.SignHS256(authSecret, jwtauth.Grant{Subject: "test", Subscribe: subscribe, Publish: publish, TTL: ttl})
	require.NoError(t, err)
	return tok
}

func newVerifier(t testing.TB) *jwtauth.Verifier {
	t.Helper()
	v, err := jwtauth.New(jwtauth.Config{Secret: authSecret}, nil)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	return v
}

// newAuthGateway is the real wiring with authorization on.
func newAuthGateway(t *testing.T) *gateway {
	t.Helper()
	v := newVerifier(t)
	return newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) { c.Auth = v })
}

// do sends a request with the token in the Authorization header (when
// not empty) and returns the response, body read.
func (g *gateway) do(t *testing.T, method, path, token, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, g.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		_ = resp.Body.Close() // a stream never ends by itself: the status is what counts
		return resp, ""
	}
	return resp, readBody(t, resp)
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// requireStatus asserts a JSON error response with status, and for 401
// and 403 the RFC 6750 challenge.
func requireStatus(t *testing.T, resp *http.Response, body string, status int) {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, body)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var e struct{ Error string }
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	assert.NotEmpty(t, e.Error)
	switch status {
	case http.StatusUnauthorized:
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `Bearer `)
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`)
	case http.StatusForbidden:
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`)
	}
}

// protected are the endpoints that need a token, with a body for POST.
var protected = []struct{ method, path, body string }{
	{http.MethodGet, "/events/projects", ""},
	{http.MethodGet, "/events/projects/A", ""},
	{http.MethodGet, "/events?topic=projects:A", ""},
	{http.MethodGet, "/projects", ""},
	{http.MethodGet, "/projects/A", ""},
	{http.MethodPost, "/events", envelope("A", 1, "")},
	// Invalid requests too: a client without a valid token learns nothing
	// about what the gateway would accept.
	{http.MethodGet, "/events/projects/bad%20id", ""},
	{http.MethodGet, "/events?topic=users:1", ""},
	{http.MethodGet, "/projects/bad%20id", ""},
	{http.MethodPost, "/events", "{not json"},
}

func TestMissingOrBadTokenIs401Everywhere(t *testing.T) {
	t.Parallel()
	g := newAuthGateway(t)
	all := []string{"projects:*"}
	good := mint(t, all, all, time.Hour)
	parts := strings.Split(good, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix(), "subscribe": all, "publish": all}).SignedString(authSecret)
	require.NoError(t, err)
	otherSecret, err := jwtauth.SignHS256([]byte(strings.Repeat("x", 40)), jwtauth.Grant{Subscribe: all, Publish: all, TTL: time.Hour})
	require.NoError(t, err)

	for name, header := range map[string]http.Header{
		"no token":                  nil,
		"malformed":                 bearer("not-a-jwt"),
		"expired":                   bearer(expired),
		"signed with another key":   bearer(otherSecret),
		"alg none":                  bearer(none),
		"signature cut off":         bearer(parts[0] + "." + parts[1] + "."),
		"empty bearer":              {"Authorization": {"Bearer "}},
		"two bearer headers":        {"Authorization": {"Bearer " + good, "Bearer " + good}},
		"basic auth only":           {"Authorization": {"Basic dXNlcjpwYXNz"}},
		"bad token in the cookie":   {"Cookie": {httpapi.TokenCookie + "=garbage"}},
		"bad bearer, good cookie":   {"Authorization": {"Bearer garbage"}, "Cookie": {httpapi.TokenCookie + "=" + good}},
		"bearer in lower case, bad": {"Authorization": {"bearer garbage"}},
	} {
		t.Run(name, func(t *testing.T) {
			for _, ep := range protected {
				req, err := http.NewRequest(ep.method, g.srv.URL+ep.path, strings.NewReader(ep.body))
				require.NoError(t, err)
				req.Header = header.Clone()
				if req.Header == nil {
					req.Header = http.Header{}
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := g.srv.Client().Do(req)
				require.NoError(t, err)
				if resp.StatusCode == http.StatusOK {
					_ = resp.Body.Close()
					require.FailNow(t, "accepted", "%s %s", ep.method, ep.path)
				}
				requireStatus(t, resp, readBody(t, resp), http.StatusUnauthorized)
			}
		})
	}
	for name, query := range map[string]string{
		"bad query token":   "access_token=garbage",
		"empty query token": "access_token=",
		"two query tokens":  "access_token=" + good + "&access_token=" + good,
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := g.do(t, http.MethodGet, "/events/projects?"+query, "", "")
			requireStatus(t, resp, body, http.StatusUnauthorized)
		})
	}
	resp, body := g.do(t, http.MethodGet, "/events/projects?access_token=expired-"+expired, "", "")
	requireStatus(t, resp, body, http.StatusUnauthorized)
	resp, body = g.do(t, http.MethodGet, "/events/projects", expired, "")
	requireStatus(t, resp, body, http.StatusUnauthorized)
	assert.Contains(t, body, "expired", "the client is told why")
}

// The token is read from the Authorization header, else the access_token
// parameter, else the statusd_token cookie.
func TestTokenSources(t *testing.T) {
	t.Parallel()
	g := newAuthGateway(t)
	good := mint(t, []string{"projects:*"}, nil, time.Hour)
	for name, c := range map[string]struct {
		query  string
		header http.Header
	}{
		"Authorization header":                 {"", bearer(good)},
		"bearer scheme in any case":            {"", http.Header{"Authorization": {"bEaReR " + good}}},
		"access_token parameter":               {"?access_token=" + url.QueryEscape(good), nil},
		"statusd_token cookie":                 {"", http.Header{"Cookie": {httpapi.TokenCookie + "=" + good}}},
		"header wins over a bad parameter":     {"?access_token=garbage", bearer(good)},
		"parameter wins over a bad cookie":     {"?access_token=" + good, http.Header{"Cookie": {httpapi.TokenCookie + "=garbage"}}},
		"basic auth is ignored, query is read": {"?access_token=" + good, http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}},
	} {
		t.Run(name, func(t *testing.T) {
			s := g.openStream(t, "/events/projects"+c.query, c.header)
			s.close()
		})
	}
	g.openStream(t, "/events/projects?snapshot=false&access_token="+good+"&x=1", nil).close()
}

// A token must cover every selector a stream asks for, or the whole
// request is refused; snapshots and replays hold only what it covers.
func TestStreamsNeedGrantsForEverySelector(t *testing.T) {
	t.Parallel()
	g := newAuthGateway(t)
	onlyA := mint(t, []string{"projects:A"}, nil, time.Hour)
	noSubscribe := mint(t, nil, []string{"projects:*"}, time.Hour)
	emptySubscribe := mint(t, []string{}, nil, time.Hour)
	aAndB := mint(t, []string{"projects:A", "projects:B"}, nil, time.Hour)
	everything := mint(t, []string{"projects:*"}, nil, time.Hour)

	for _, c := range []struct {
		token, path string
		status      int
	}{
		{onlyA, "/events/projects", http.StatusForbidden},
		{onlyA, "/events/projects/B", http.StatusForbidden},
		{onlyA, "/events?topic=projects:A&topic=projects:B", http.StatusForbidden},
		{onlyA, "/events?topic=projects:*", http.StatusForbidden},
		{onlyA, "/events?topic=projects:A&topic=projects:*", http.StatusForbidden},
		{onlyA, "/events/projects?snapshot=false", http.StatusForbidden},
		{aAndB, "/events/projects", http.StatusForbidden},
		{noSubscribe, "/events/projects/A", http.StatusForbidden},
		{noSubscribe, "/events/projects", http.StatusForbidden},
		{noSubscribe, "/events?topic=projects:A", http.StatusForbidden},
		{emptySubscribe, "/events/projects/A", http.StatusForbidden},
		{onlyA, "/events/projects/A", http.StatusOK},
		{onlyA, "/events?topic=projects:A", http.StatusOK},
		{onlyA, "/events?topic=projects:A&topic=projects:A", http.StatusOK},
		{aAndB, "/events?topic=projects:A&topic=projects:B", http.StatusOK},
		{everything, "/events?topic=projects:*&topic=projects:B", http.StatusOK},
	} {
		if c.status == http.StatusOK {
			g.openStream(t, c.path, bearer(c.token)).close()
			continue
		}
		resp, body := g.do(t, http.MethodGet, c.path, c.token, "")
		requireStatus(t, resp, body, c.status)
	}

	// Snapshot and replay of a covered stream: A's events only.
	for i := 1; i <= 2; i++ {
		require.NoError(t, g.bus.BroadcastProjectUpdate(project("A", i)))
		require.NoError(t, g.bus.BroadcastProjectUpdate(project("B", i)))
	}
	require.Eventually(t, func() bool { e, ok := g.bus.Latest("B"); return ok && e.Event().Project.Name == "app-2" }, waitFor, time.Millisecond)
	s := g.openStream(t, "/events?topic=projects:A", bearer(onlyA))
	first := s.next()
	assert.Contains(t, first.Data, `"id":"A"`)
	assert.Contains(t, first.Data, `"app-2"`, "the snapshot: A's latest")
	s.quiet(200 * time.Millisecond)
	s.close()

	all := g.openStream(t, "/events/projects", bearer(everything))
	var idA1 string
	for idA1 == "" {
		ev := all.next()
		if strings.Contains(ev.Data, `"id":"A"`) {
			idA1 = ev.ID
		}
	}
	all.close()
	// Resuming the wildcard stream from an id needs the wildcard grant too.
	resp, body := g.do(t, http.MethodGet, "/events/projects?lastEventId="+url.QueryEscape(idA1), onlyA, "")
	requireStatus(t, resp, body, http.StatusForbidden)
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("B", 3)))
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("A", 3)))
	h := bearer(onlyA)
	h.Set("Last-Event-ID", idA1)
	s = g.openStream(t, "/events/projects/A", h)
	for _, want := range []string{`"app-3"`} {
		ev := s.next()
		assert.Contains(t, ev.Data, `"id":"A"`, "the replay holds A's events only")
		assert.Contains(t, ev.Data, want)
	}
	s.quiet(200 * time.Millisecond)
}

// A stream ends cleanly (closing chunk) when its token expires; the same
// token is then refused.
func TestStreamEndsWhenItsTokenExpires(t *testing.T) {
	t.Parallel()
	g := newAuthGateway(t)
	// exp has a resolution of one second: this token expires 3-4 s from now.
	token := mint(t, []string{"projects:*"}, nil, 4*time.Second)
	claims := jwt.MapClaims{}
	_, _, err := jwt.NewParser().ParseUnverified(token, claims)
	require.NoError(t, err)
	expSec, err := claims.GetExpirationTime()
	require.NoError(t, err)
	exp := expSec.Time

	req, err := http.NewRequest(http.MethodGet, g.srv.URL+"/events/projects?access_token="+token, nil)
	require.NoError(t, err)
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("live", 1)))
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()
	select {
	case err := <-ended:
		require.NoError(t, err, "a clean end of stream (closing chunk), not a cut connection")
		assert.False(t, time.Now().Before(exp), "not before the token expires")
		assert.Less(t, time.Since(exp), 5*time.Second, "soon after it expires")
	case <-time.After(time.Until(exp) + 10*time.Second):
		require.FailNow(t, "the stream outlived its token")
	}
	resp2, body := g.do(t, http.MethodGet, "/events/projects?access_token="+token, "", "")
	requireStatus(t, resp2, body, http.StatusUnauthorized)
	assert.Contains(t, body, "expired")
	require.Eventually(t, func() bool { return g.api.OpenStreams() == 0 }, waitFor, 10*time.Millisecond)
}

// POST /events: 401 without a valid token, 403 unless publish covers the
// event's project; nothing refused is broadcast.
func TestPublishNeedsAPublishGrant(t *testing.T) {
	t.Parallel()
	g := newAuthGateway(t)
	watcher := g.openStream(t, "/events/projects", bearer(mint(t, []string{"projects:*"}, nil, time.Hour)))
	p42 := mint(t, []string{"projects:*"}, []string{"projects:42"}, time.Hour)
	readOnly := mint(t, []string{"projects:*"}, nil, time.Hour)
	allPub := mint(t, nil, []string{"projects:*"}, time.Hour)

	resp, body := g.do(t, http.MethodPost, "/events", "", envelope("42", 1, ""))
	requireStatus(t, resp, body, http.StatusUnauthorized)
	resp, body = g.do(t, http.MethodPost, "/events", "garbage", envelope("42", 2, ""))
	requireStatus(t, resp, body, http.StatusUnauthorized)
	resp, body = g.do(t, http.MethodPost, "/events", p42, envelope("43", 3, ""))
	requireStatus(t, resp, body, http.StatusForbidden)
	assert.Contains(t, body, "projects:43")
	resp, body = g.do(t, http.MethodPost, "/events", p42, envelope("43", 4, "boom"))
	requireStatus(t, resp, body, http.StatusForbidden)
	resp, body = g.do(t, http.MethodPost, "/events", readOnly, envelope("42", 5, ""))
	requireStatus(t, resp, body, http.StatusForbidden)
	resp, body = g.do(t, http.MethodPost, "/events", p42, `{"event":"project_updated","project":{"id":"bad id"}}`)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)

	resp, body = g.do(t, http.MethodPost, "/events", p42, envelope("42", 6, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	resp, body = g.do(t, http.MethodPost, "/events", allPub, envelope("any", 7, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)

	assert.Contains(t, watcher.next().Data, `"app-6"`, "the first event broadcast is the first accepted one")
	assert.Contains(t, watcher.next().Data, `"app-7"`)
	watcher.quiet(200 * time.Millisecond)
	_, ok := g.bus.Latest("43")
	assert.False(t, ok, "nothing refused was broadcast")
}

// GET /projects lists only the projects the token covers; GET
// /projects/{id} outside them is 403, whether the project exists or not.
func TestProjectQueriesObeyGrants(t *testing.T) {
	t.Parallel()
	g := newAuthGateway(t)
	for _, id := range []string{"A", "B", "C"} {
		require.NoError(t, g.bus.BroadcastProjectUpdate(project(id, 1)))
	}
	require.Eventually(t, func() bool { return len(g.bus.LatestAll()) == 3 }, waitFor, time.Millisecond)
	ids := func(token string) []string {
		resp, body := g.do(t, http.MethodGet, "/projects", token, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		var ps []domain.Project
		require.NoError(t, json.Unmarshal([]byte(body), &ps))
		out := []string{}
		for _, p := range ps {
			out = append(out, p.ID)
		}
		return out
	}
	assert.Equal(t, []string{"A", "C"}, ids(mint(t, []string{"projects:A", "projects:C", "projects:Z"}, nil, time.Hour)))
	assert.Equal(t, []string{"A", "B", "C"}, ids(mint(t, []string{"projects:*"}, nil, time.Hour)))
	assert.Equal(t, []string{}, ids(mint(t, nil, []string{"projects:*"}, time.Hour)), "publish grants do not let a client read")

	onlyA := mint(t, []string{"projects:A", "projects:Z"}, nil, time.Hour)
	resp, body := g.do(t, http.MethodGet, "/projects/A", onlyA, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	resp, body = g.do(t, http.MethodGet, "/projects/B", onlyA, "")
	requireStatus(t, resp, body, http.StatusForbidden)
	resp, body = g.do(t, http.MethodGet, "/projects/nobody", onlyA, "")
	requireStatus(t, resp, body, http.StatusForbidden)
	resp, body = g.do(t, http.MethodGet, "/projects/Z", onlyA, "")
	requireStatus(t, resp, body, http.StatusNotFound)
}

func TestHealthReadinessDashboardAndMetricsStayOpen(t *testing.T) {
	t.Parallel()
	g := newAuthGateway(t)
	for _, path := range []string{"/healthz", "/readyz", "/", "/metrics"} {
		resp, body := g.get(t, path)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
	}
	resp, _ := g.get(t, "/")
	assert.Equal(t, "no-referrer", resp.Header.Get("Referrer-Policy"), "the dashboard's URL (and a token in it) is never sent on")

	off := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) { c.DisableMetrics = true })
	resp, body := off.get(t, "/metrics")
	requireStatus(t, resp, body, http.StatusNotFound)
}

// Tokens never appear in logs (debug level included) or metrics.
func TestTokensNeverLoggedNorInMetrics(t *testing.T) {
	t.Parallel()
	logs := &httpapitest.Log{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bus, err := pubsub.NewInMemory(pubsub.Config{}, logger)
	require.NoError(t, err)
	v, err := jwtauth.New(jwtauth.Config{Secret: authSecret}, logger)
	require.NoError(t, err)
	defer v.Close()
	api := httpapi.New(httpapi.Config{Auth: v}, bus, logger)
	srv := httptest.NewServer(api)
	defer func() {
		api.CloseStreams()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, bus.Close(ctx))
	}()
	good := mint(t, []string{"projects:A"}, []string{"projects:A"}, time.Hour)
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}).SignedString(authSecret)
	require.NoError(t, err)
	secrets := []string{good, expired, "made-up-token-value-1234567890"}
	get := func(path string, header http.Header) {
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		req.Header = header
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	for _, tok := range secrets {
		get("/events/projects?access_token="+tok+"&snapshot=false", nil) // 401 or 403
		get("/events/projects/B?x=1&access_token="+url.QueryEscape(tok), nil)
		get("/projects?Access_Token="+tok, nil)
		get("/projects/A", bearer(tok))
		get("/projects/A", http.Header{"Cookie": {httpapi.TokenCookie + "=" + tok}})
	}
	short := mint(t, []string{"projects:A"}, nil, 3*time.Second)
	secrets = append(secrets, short)
	get("/events/projects/A?access_token="+short, nil) // 200 until it expires: logged at its end
	get("/metrics", nil)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "token expired") }, waitFor, 10*time.Millisecond)

	out := logs.String()
	assert.Contains(t, out, "access_token=REDACTED", "refusals are logged, with the token redacted")
	for _, tok := range secrets {
		assert.NotContains(t, out, tok)
		assert.NotContains(t, out, tok[len(tok)-20:], "not even its signature")
	}
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	require.NoError(t, err)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for _, tok := range secrets {
			require.NotContains(t, sc.Text(), tok[len(tok)-20:])
		}
	}
	_ = resp.Body.Close()
	require.False(t, errors.Is(sc.Err(), io.ErrUnexpectedEOF))
}

// Cross-site request forgery: a page on another site can make the browser
// POST with the statusd_token cookie, but only as a form or text (without
// a CORS preflight it cannot send application/json). Those are refused
// with 415 and nothing is broadcast.
func TestCookiePostsThatAFormCouldSendAreRefused(t *testing.T) {
	t.Parallel()
	g := newAuthGateway(t)
	cookie := httpapi.TokenCookie + "=" + mint(t, []string{"projects:*"}, []string{"projects:*"}, time.Hour)
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		req, err := http.NewRequest(http.MethodPost, g.srv.URL+"/events", strings.NewReader(envelope("csrf", 1, "")))
		require.NoError(t, err)
		req.Header.Set("Cookie", cookie)
		req.Header.Set("Origin", "https://evil.example")
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := g.srv.Client().Do(req)
		require.NoError(t, err)
		requireStatus(t, resp, readBody(t, resp), http.StatusUnsupportedMediaType)
	}
	// The same cookie with application/json (which only a same-origin page,
	// or an origin CORS allows, can send) is accepted.
	req, err := http.NewRequest(http.MethodPost, g.srv.URL+"/events", strings.NewReader(envelope("same-origin", 1, "")))
	require.NoError(t, err)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, readBody(t, resp))
	require.Eventually(t, func() bool { _, ok := g.bus.Latest("same-origin"); return ok }, waitFor, time.Millisecond)
	_, ok := g.bus.Latest("csrf")
	assert.False(t, ok, "nothing a form could send was broadcast")
}
