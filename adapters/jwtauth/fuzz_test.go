package jwtauth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// fuzzNow is the fixed clock of the fuzz targets, so that seeds mean the
// same thing on every run: exp 4102444800 is 2100-01-01.
var fuzzNow = func() time.Time { return time.Unix(1_800_000_000, 0) }

// FuzzVerifyToken: any string presented as a token is refused with
// ErrInvalidToken or accepted, never a panic; an accepted one was signed
// with the secret and carries only valid grants.
func FuzzVerifyToken(f *testing.F) {
	v, err := jwtauth.New(jwtauth.Config{Secret: secret, Now: fuzzNow}, nil)
	require.NoError(f, err)
	defer v.Close()
	good, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": 4102444800, "subscribe": []string{"projects:*"}}).SignedString(secret)
	require.NoError(f, err)
	for _, s := range []string{good, "", ".", "..", "a.b.c", good + "x", unsigned(`{"alg":"none"}`, jwt.MapClaims{"exp": 4102444800})} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		a, err := v.Verify(context.Background(), token)
		if err != nil {
			require.ErrorIs(t, err, jwtauth.ErrInvalidToken)
			return
		}
		for _, g := range []domain.Grants{a.Subscribe, a.Publish} {
			for _, sel := range g.Selectors() {
				_, err := domain.ParseTopic(sel.String())
				require.NoError(t, err)
			}
		}
		require.True(t, a.Expires.After(fuzzNow()))
	})
}

// FuzzClaims: whatever JSON a correctly signed token carries as claims,
// Verify never panics, and it accepts exactly the tokens whose subscribe
// and publish are absent, null or arrays of valid selectors, with an exp
// in the future — and then grants exactly those selectors.
func FuzzClaims(f *testing.F) {
	v, err := jwtauth.New(jwtauth.Config{Secret: secret, Now: fuzzNow}, nil)
	require.NoError(f, err)
	defer v.Close()
	for _, s := range []string{
		`{"exp":4102444800,"subscribe":["projects:*"],"publish":["projects:42"]}`,
		`{"exp":4102444800,"subscribe":"projects:*"}`,
		`{"exp":4102444800,"subscribe":[1,2]}`,
		`{"exp":4102444800,"subscribe":["projects:a*"]}`,
		`{"exp":4102444800,"subscribe":null,"publish":[]}`,
		`{"exp":"4102444800"}`,
		`{"exp":1}`,
		`{"subscribe":["projects:*"]}`,
		`{"exp":4102444800,"aud":["a",1]}`,
		`[]`, `null`, `{`, `{"exp":1e400}`,
	} {
		f.Add(s)
	}
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	f.Fuzz(func(t *testing.T, payload string) {
		unsignedPart := header + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
		sig, err := jwt.SigningMethodHS256.Sign(unsignedPart, secret)
		require.NoError(t, err)
		token := unsignedPart + "." + base64.RawURLEncoding.EncodeToString(sig)
		a, err := v.Verify(context.Background(), token)
		if err != nil {
			require.ErrorIs(t, err, jwtauth.ErrInvalidToken)
			return
		}
		var c struct {
			Subscribe []string `json:"subscribe"`
			Publish   []string `json:"publish"`
		}
		require.NoError(t, json.Unmarshal([]byte(payload), &c), "accepted claims are a JSON object")
		for _, pair := range []struct {
			raw []string
			got domain.Grants
		}{{c.Subscribe, a.Subscribe}, {c.Publish, a.Publish}} {
			want, err := domain.ParseGrants(pair.raw)
			require.NoError(t, err, "accepted grants are valid")
			require.Equal(t, want.Selectors(), pair.got.Selectors())
		}
		require.True(t, a.Expires.After(fuzzNow()))
	})
}
