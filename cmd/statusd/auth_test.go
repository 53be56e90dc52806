package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
)

const testSecret = "statusd-test-secret-0123456789abcdef"

func TestAuthFlags(t *testing.T) {
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	pubFile := filepath.Join(dir, "pub.pem")
	require.NoError(t, os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	privFile := filepath.Join(dir, "priv.pem")
	require.NoError(t, os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))

	c, err := parseConfig(nil, env(nil), io.Discard)
	require.NoError(t, err)
	assert.False(t, c.auth.enabled(), "no key: open mode")

	c, err = parseConfig(nil, env(map[string]string{
		"STATUSD_JWT_SECRET": testSecret, "STATUSD_JWT_PUBLIC_KEY": pubFile, "STATUSD_JWT_JWKS_URL": "https://id.example/jwks",
		"STATUSD_JWT_ISSUER": "https://id.example", "STATUSD_JWT_AUDIENCE": "statusd", "STATUSD_METRICS_ADDR": "127.0.0.1:9090",
	}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, authFlags{secret: testSecret, publicKey: pubFile, jwksURL: "https://id.example/jwks", issuer: "https://id.example", audience: "statusd"}, c.auth)
	assert.Equal(t, "127.0.0.1:9090", c.metricsAddr)

	_, err = parseConfig([]string{"--jwt-secret", strings.Repeat("s", 32)}, env(nil), io.Discard)
	assert.NoError(t, err, "32 bytes is enough")

	for name, bad := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"31-byte secret":             {[]string{"--jwt-secret", strings.Repeat("s", 31)}, nil},
		"short secret from the env":  {nil, map[string]string{"STATUSD_JWT_SECRET": "short"}},
		"missing key file":           {[]string{"--jwt-public-key", filepath.Join(dir, "nope.pem")}, nil},
		"private key file":           {[]string{"--jwt-public-key", privFile}, nil},
		"issuer without a key":       {[]string{"--jwt-issuer", "x"}, nil},
		"audience without a key":     {nil, map[string]string{"STATUSD_JWT_AUDIENCE": "x"}},
		"not a key file":             {[]string{"--jwt-public-key", "/dev/null"}, nil},
		"flag wins over env (short)": {[]string{"--jwt-secret", "short"}, map[string]string{"STATUSD_JWT_SECRET": testSecret}},
	} {
		_, err := parseConfig(bad.args, env(bad.env), io.Discard)
		assert.Error(t, err, name)
	}
	// A refused configuration stops statusd before it listens.
	logs := &syncBuffer{}
	err = run(context.Background(), []string{"--addr", "127.0.0.1:0", "--jwt-secret", "too-short"}, env(nil), logs)
	require.ErrorContains(t, err, "at least 32")
	assert.NotContains(t, logs.String(), "listening on")
}

// startRun runs statusd in-process (runStatusd) and returns its URL and
// its logs; it is stopped, and checked to stop cleanly, at the end of the
// test.
func startRun(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	s := runStatusd(t, args...)
	return s.url, s.logs
}

var warnOpen = regexp.MustCompile(`level=WARN msg="authorization is off`)

// Without a key statusd runs open, as before, and says so once, loudly;
// with one it does not.
func TestOpenModeWarnsOnce(t *testing.T) {
	url, logs := startRun(t)
	assert.Equal(t, http.StatusOK, status(t, url+"/events/projects/x?snapshot=false"), "open: streams need no token")
	assert.Len(t, warnOpen.FindAllString(logs.String(), -1), 1, logs.String())

	url, logs = startRun(t, "--jwt-secret", testSecret)
	assert.Equal(t, http.StatusUnauthorized, status(t, url+"/events/projects"))
	assert.Empty(t, warnOpen.FindAllString(logs.String(), -1))
	assert.Contains(t, logs.String(), "authorization is on")
}

var metricsOn = regexp.MustCompile(`metrics on (http://[^ "]+)/metrics`)

// --metrics-addr serves /metrics on its own listener, and then not on the
// main one.
func TestMetricsAddr(t *testing.T) {
	url, logs := startRun(t, "--metrics-addr", "127.0.0.1:0", "--jwt-secret", testSecret)
	var m []string
	// The metrics listener is logged just after the main one.
	require.Eventually(t, func() bool { m = metricsOn.FindStringSubmatch(logs.String()); return m != nil }, 10*time.Second, 5*time.Millisecond,
		"the metrics listener's address is logged")
	require.NotEqual(t, url, m[1])
	resp, err := http.Get(m[1] + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), "statusbroadcaster_sse_open_streams")
	assert.Equal(t, http.StatusNotFound, status(t, url+"/metrics"))
	assert.Equal(t, http.StatusNotFound, status(t, m[1]+"/events/projects"), "the metrics listener serves nothing else")

	url, _ = startRun(t, "--jwt-secret", testSecret)
	assert.Equal(t, http.StatusOK, status(t, url+"/metrics"), "without --metrics-addr, /metrics stays on the main listener, open")

	err = run(context.Background(), []string{"--addr", "127.0.0.1:0", "--metrics-addr", "256.0.0.1:1"}, env(nil), io.Discard)
	assert.ErrorContains(t, err, "--metrics-addr")
}

// --pprof serves Go's profiles on the private metrics listener only, and
// is refused without one.
func TestPprofOnlyOnTheMetricsListener(t *testing.T) {
	url, logs := startRun(t, "--metrics-addr", "127.0.0.1:0", "--pprof", "--jwt-secret", testSecret)
	var m []string
	require.Eventually(t, func() bool { m = metricsOn.FindStringSubmatch(logs.String()); return m != nil }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, http.StatusOK, status(t, m[1]+"/debug/pprof/"))
	assert.Equal(t, http.StatusOK, status(t, m[1]+"/debug/pprof/goroutine?debug=1"))
	assert.Equal(t, http.StatusNotFound, status(t, url+"/debug/pprof/"), "never on the public listener")

	url, logs = startRun(t, "--metrics-addr", "127.0.0.1:0", "--jwt-secret", testSecret)
	require.Eventually(t, func() bool { m = metricsOn.FindStringSubmatch(logs.String()); return m != nil }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, http.StatusNotFound, status(t, m[1]+"/debug/pprof/"), "off by default")
	assert.Equal(t, http.StatusNotFound, status(t, url+"/debug/pprof/"))

	err := run(context.Background(), []string{"--addr", "127.0.0.1:0", "--pprof"}, env(nil), io.Discard)
	assert.ErrorContains(t, err, "--pprof needs --metrics-addr")
}

func TestTokenCommandInProcess(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, runToken([]string{"--jwt-secret", testSecret, "--subscribe", "projects:*", "--publish", "projects:42,projects:43", "--ttl", "1h", "--sub", "ci"}, env(nil), &out, &errOut))
	v, err := jwtauth.New(jwtauth.Config{Secret: []byte(testSecret)}, nil)
	require.NoError(t, err)
	defer v.Close()
	a, err := v.Verify(context.Background(), strings.TrimSpace(out.String()))
	require.NoError(t, err)
	assert.Equal(t, "ci", a.Subject)
	assert.True(t, a.Publish.CoversProject("43"))
	assert.False(t, a.Publish.CoversProject("44"))
	assert.WithinDuration(t, time.Now().Add(time.Hour), a.Expires, 2*time.Second)

	for name, c := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"no secret":        {[]string{"--subscribe", "projects:*"}, nil},
		"short secret":     {[]string{"--jwt-secret", "short"}, nil},
		"short env secret": {nil, map[string]string{"STATUSD_JWT_SECRET": "short"}},
		"bad selector":     {[]string{"--jwt-secret", testSecret, "--subscribe", "projects:a*"}, nil},
		"bad publish":      {[]string{"--jwt-secret", testSecret, "--publish", "42"}, nil},
		"zero ttl":         {[]string{"--jwt-secret", testSecret, "--ttl", "0s"}, nil},
		"negative ttl":     {[]string{"--jwt-secret", testSecret, "--ttl", "-1h"}, nil},
		"stray argument":   {[]string{"--jwt-secret", testSecret, "extra"}, nil},
	} {
		out.Reset()
		assert.Error(t, runToken(c.args, env(c.env), &out, io.Discard), name)
		assert.Empty(t, out.String(), "%s: no token printed", name)
	}
}

// The README's one-liner: `statusd token …` prints a token as its last line
// and exits 0; a statusd started with the same secret (from the
// environment) accepts it for what it grants, refuses the rest, and never
// logs it.
func TestTokenCommandAgainstStatusd(t *testing.T) {
	bin := httpapitest.BuildStatusd(t)

	mint := exec.Command(bin, "token", "--jwt-secret", testSecret, "--subscribe", "projects:*", "--publish", "projects:42", "--ttl", "1h")
	out, err := mint.Output()
	require.NoError(t, err, "exit 0")
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	token := lines[len(lines)-1]
	require.Regexp(t, `^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`, token)

	fromEnv := exec.Command(bin, "token", "--subscribe", "projects:A")
	fromEnv.Env = append(os.Environ(), "STATUSD_JWT_SECRET="+testSecret)
	out, err = fromEnv.Output()
	require.NoError(t, err)
	lines = strings.Split(strings.TrimSpace(string(out)), "\n")
	onlyA := lines[len(lines)-1]

	bad := exec.Command(bin, "token", "--jwt-secret", "short")
	assert.Error(t, bad.Run(), "a short secret fails")

	s := httpapitest.StartStatusd(t, bin, []string{"STATUSD_ADDR=127.0.0.1:0", "STATUSD_JWT_SECRET=" + testSecret}, "--log-level", "DEBUG")
	url := s.URL

	do := func(method, path, tok, body string) int {
		req, err := http.NewRequest(method, url+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	ev := func(id string) string {
		return `{"event":"project_updated","project":{"id":"` + id + `","name":"n","status":"ready"}}`
	}
	assert.Equal(t, http.StatusUnauthorized, do(http.MethodGet, "/projects", "", ""))
	assert.Equal(t, http.StatusUnauthorized, do(http.MethodPost, "/events", "", ev("42")))
	assert.Equal(t, http.StatusForbidden, do(http.MethodPost, "/events", token, ev("43")))
	assert.Equal(t, http.StatusForbidden, do(http.MethodPost, "/events", onlyA, ev("A")))
	assert.Equal(t, http.StatusForbidden, do(http.MethodGet, "/projects/B", onlyA, ""))
	assert.Equal(t, http.StatusUnauthorized, do(http.MethodGet, "/events/projects?access_token=garbage."+token[10:], "", ""))
	assert.Equal(t, http.StatusForbidden, do(http.MethodGet, "/events/projects?access_token="+onlyA, "", ""))

	resp, err := http.Get(url + "/events/projects?access_token=" + token)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, http.StatusAccepted, do(http.MethodPost, "/events", token, ev("42")))
	sc := bufio.NewScanner(resp.Body)
	got := ""
	for got == "" && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			got = sc.Text()
		}
	}
	assert.Contains(t, got, `"id":"42"`, "the token reads what it published")

	require.NoError(t, s.Stop(os.Interrupt, 10*time.Second))
	l := s.Logs()
	assert.Contains(t, l, "access_token=REDACTED", "the refusals were logged (DEBUG)")
	for _, tok := range []string{token, onlyA} {
		assert.NotContains(t, l, tok[len(tok)-20:], "no token in the logs")
	}
}

// --jwt-public-key and --jwt-jwks-url end to end: statusd accepts tokens
// signed with the key, and refuses an HS256 token signed with the public
// key as its secret.
func TestPublicKeyAndJWKSFlags(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pubFile := filepath.Join(t.TempDir(), "pub.pem")
	require.NoError(t, os.WriteFile(pubFile, pubPEM, 0o600))

	jwk, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgRS256}})
	require.NoError(t, err)
	store := jwkset.NewMemoryStorage()
	require.NoError(t, store.KeyWrite(context.Background(), jwk))
	set, err := store.JSONPublic(context.Background())
	require.NoError(t, err)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(set) }))
	defer idp.Close()

	sign := func(m jwt.SigningMethod, k any) string {
		tok := jwt.NewWithClaims(m, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "subscribe": []string{"projects:*"}, "iss": "idp", "aud": "statusd"})
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(k)
		require.NoError(t, err)
		return s
	}
	good := sign(jwt.SigningMethodRS256, key)
	confused := sign(jwt.SigningMethodHS256, pubPEM)
	streamStatus := func(url, tok string) int {
		req, err := http.NewRequest(http.MethodGet, url+"/events/projects", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for name, args := range map[string][]string{
		"public key": {"--jwt-public-key", pubFile},
		"JWKS":       {"--jwt-jwks-url", idp.URL, "--jwt-issuer", "idp", "--jwt-audience", "statusd"},
	} {
		t.Run(name, func(t *testing.T) {
			url, logs := startRun(t, args...)
			assert.Equal(t, http.StatusOK, streamStatus(url, good), logs.String())
			assert.Equal(t, http.StatusUnauthorized, streamStatus(url, confused))
		})
	}
	url, _ := startRun(t, "--jwt-jwks-url", idp.URL, "--jwt-audience", "another")
	assert.Equal(t, http.StatusUnauthorized, streamStatus(url, good), "the audience is checked")
}
