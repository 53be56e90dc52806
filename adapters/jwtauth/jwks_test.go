package jwtauth_test

import (
	"context"
	"crypto/rsa"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
)

// jwksServer publishes a JWK Set that a test can change, and counts how
// often it is fetched.
type jwksServer struct {
	srv     *httptest.Server
	body    atomic.Pointer[[]byte]
	fetches atomic.Int64
	down    atomic.Bool
}

func newJWKSServer(t *testing.T) *jwksServer {
	j := &jwksServer{}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		j.fetches.Add(1)
		if j.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*j.body.Load())
	}))
	t.Cleanup(j.srv.Close)
	j.publish(t)
	return j
}

// publish makes the set hold exactly these RSA keys, by kid.
func (j *jwksServer) publish(t *testing.T, keys ...keyWithID) {
	t.Helper()
	store := jwkset.NewMemoryStorage()
	for _, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(&k.key.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: jwkset.AlgRS256, USE: jwkset.UseSig}})
		require.NoError(t, err)
		require.NoError(t, store.KeyWrite(context.Background(), jwk))
	}
	raw, err := store.JSONPublic(context.Background())
	require.NoError(t, err)
	b := []byte(raw)
	j.body.Store(&b)
}

type keyWithID struct {
	kid string
	key *rsa.PrivateKey
}

func signKID(t *testing.T, k keyWithID, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.key)
	require.NoError(t, err)
	return s
}

// Keys come from the JWKS; a token with a new kid makes the verifier fetch
// the set again (key rotation); a key removed from the set stops verifying
// after the background refresh; made-up kids cannot make it fetch more
// than once per interval; a token HMAC-signed with the published key is
// refused.
func TestJWKS(t *testing.T) {
	k1 := keyWithID{"k1", rsaKey}
	k2 := keyWithID{"k2", otherRSAKey}
	j := newJWKSServer(t)
	j.publish(t, k1)
	v := newVerifier(t, jwtauth.Config{JWKSURL: j.srv.URL, JWKSRefresh: 300 * time.Millisecond, JWKSUnknownKIDInterval: time.Hour})
	ctx := context.Background()

	_, err := v.Verify(ctx, signKID(t, k1, valid()))
	require.NoError(t, err, "a key of the set verifies")

	// Rotation: k2 is published; the first token that names it makes the
	// verifier fetch the set at once, without waiting for the refresh.
	j.publish(t, k1, k2)
	before := j.fetches.Load()
	_, err = v.Verify(ctx, signKID(t, k2, valid()))
	require.NoError(t, err, "a key published later verifies on first sight")
	assert.Equal(t, before+1, j.fetches.Load())

	// Made-up kids: refused, and the set is not fetched again within the
	// interval however many arrive.
	before = j.fetches.Load()
	for range 20 {
		start := time.Now()
		_, err = v.Verify(ctx, signKID(t, keyWithID{"made-up", otherRSAKey}, valid()))
		require.ErrorIs(t, err, jwtauth.ErrInvalidToken)
		assert.Less(t, time.Since(start), time.Second, "refused at once, not held")
	}
	assert.LessOrEqual(t, j.fetches.Load()-before, int64(4), "20 made-up kids: only the background refreshes in the meantime")

	// Algorithm confusion with the published key: an HS256 token whose
	// secret is the public key's PEM.
	confused := sign(t, jwt.SigningMethodHS256, pemOf(t, &rsaKey.PublicKey), valid())
	_, err = v.Verify(ctx, confused)
	require.ErrorIs(t, err, jwtauth.ErrInvalidToken)
	_, err = v.Verify(ctx, unsigned(`{"alg":"none","kid":"k1"}`, valid()))
	require.ErrorIs(t, err, jwtauth.ErrInvalidToken)

	// Revocation: k1 leaves the set; the background refresh drops it.
	j.publish(t, k2)
	require.Eventually(t, func() bool {
		_, err := v.Verify(ctx, signKID(t, k1, valid()))
		return err != nil
	}, 10*time.Second, 50*time.Millisecond, "a removed key stops verifying after a refresh")
	_, err = v.Verify(ctx, signKID(t, k2, valid()))
	require.NoError(t, err)
}

// The identity provider is down when statusd starts: it starts anyway,
// refuses tokens, and accepts them once the set can be fetched.
func TestJWKSDownAtStart(t *testing.T) {
	k1 := keyWithID{"k1", rsaKey}
	j := newJWKSServer(t)
	j.publish(t, k1)
	j.down.Store(true)
	v := newVerifier(t, jwtauth.Config{JWKSURL: j.srv.URL, JWKSRefresh: 200 * time.Millisecond})
	_, err := v.Verify(context.Background(), signKID(t, k1, valid()))
	require.ErrorIs(t, err, jwtauth.ErrInvalidToken)
	j.down.Store(false)
	require.Eventually(t, func() bool {
		_, err := v.Verify(context.Background(), signKID(t, k1, valid()))
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A JWKS over plain http to another host is accepted with a WARN (whoever
// alters that traffic mints tokens); over loopback or https, no WARN. No
// request leaves the machine: the client's transport refuses them all.
func TestJWKSOverPlainHTTPWarns(t *testing.T) {
	offline := &http.Client{Timeout: time.Second, Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("offline test transport")
	})}
	for url, warns := range map[string]bool{
		"http://idp.internal/jwks":  true,
		"https://idp.internal/jwks": false,
		"http://127.0.0.1:1/jwks":   false,
		"http://localhost:1/jwks":   false,
	} {
		var logs strings.Builder
		v, err := jwtauth.New(jwtauth.Config{JWKSURL: url, HTTPClient: offline}, slog.New(slog.NewTextHandler(&logs, nil)))
		require.NoError(t, err, url)
		v.Close()
		assert.Equal(t, warns, strings.Contains(logs.String(), "plain http"), "%s: %s", url, logs.String())
		assert.Contains(t, logs.String(), "fetching the JWKS failed", "the failed first fetch is logged")
	}
}
