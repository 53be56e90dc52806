package jwtauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
)

// One Verifier serves every request: concurrent verifications of good and
// bad tokens give each its own answer (run with -race).
func TestVerifyConcurrently(t *testing.T) {
	v := newVerifier(t, jwtauth.Config{Secret: secret, PublicKeyPEM: pemOf(t, &ecKey.PublicKey)})
	good := []string{sign(t, jwt.SigningMethodHS256, secret, valid()), sign(t, jwt.SigningMethodES256, ecKey, valid())}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	bad := []string{sign(t, jwt.SigningMethodES256, other, valid()), "garbage"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				_, err := v.Verify(context.Background(), good[(g+i)%2])
				require.NoError(t, err)
				_, err = v.Verify(context.Background(), bad[(g+i)%2])
				require.ErrorIs(t, err, jwtauth.ErrInvalidToken)
			}
		})
	}
	wg.Wait()
}

// BenchmarkVerify is the cost of checking one request's token, by key
// type (see BENCHMARKS.md).
func BenchmarkVerify(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  jwtauth.Config
		tok  string
	}{
		{"HS256", jwtauth.Config{Secret: secret}, sign(b, jwt.SigningMethodHS256, secret, valid())},
		{"RS256-2048", jwtauth.Config{PublicKeyPEM: pemOf(b, &rsaKey.PublicKey)}, sign(b, jwt.SigningMethodRS256, rsaKey, valid())},
		{"ES256", jwtauth.Config{PublicKeyPEM: pemOf(b, &ecKey.PublicKey)}, sign(b, jwt.SigningMethodES256, ecKey, valid())},
		{"EdDSA", jwtauth.Config{PublicKeyPEM: pemOf(b, edPub)}, sign(b, jwt.SigningMethodEdDSA, edKey, valid())},
	} {
		b.Run(c.name, func(b *testing.B) {
			v, err := jwtauth.New(c.cfg, nil)
			require.NoError(b, err)
			defer v.Close()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(context.Background(), c.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
