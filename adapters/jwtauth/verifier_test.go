package jwtauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("0123456789abcdef0123456789abcdef-test-secret")

// keys are generated once for the package's tests.
var (
	rsaKey, _       = rsa.GenerateKey(rand.Reader, 2048)
	otherRSAKey, _  = rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _        = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384Key, _     = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edKey, _ = ed25519.GenerateKey(rand.Reader)
)

func pemOf(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// valid returns the claims of a token valid for an hour that may read
// every project and publish about project 42.
func valid() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":       "alice",
		"exp":       time.Now().Add(time.Hour).Unix(),
		"subscribe": []string{"projects:*"},
		"publish":   []string{"projects:42"},
	}
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	c[k] = v
	return c
}

func without(c jwt.MapClaims, k string) jwt.MapClaims {
	delete(c, k)
	return c
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(m, c).SignedString(key)
	require.NoError(t, err)
	return tok
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// unsigned builds a token with the given header and claims and no
// signature: "alg": "none" and its variants.
func unsigned(header string, c jwt.MapClaims) string {
	payload, _ := json.Marshal(c)
	return b64(header) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
}

func newVerifier(t *testing.T, cfg jwtauth.Config) *jwtauth.Verifier {
	t.Helper()
	v, err := jwtauth.New(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	return v
}

// Every way a token can be wrong is refused, and every right one accepted,
// for each kind of key.
func TestVerify(t *testing.T) {
	rsaPEM := pemOf(t, &rsaKey.PublicKey)
	bySecret := jwtauth.Config{Secret: secret}
	byRSA := jwtauth.Config{PublicKeyPEM: rsaPEM}
	bySecretAndRSA := jwtauth.Config{Secret: secret, PublicKeyPEM: rsaPEM}
	byEC := jwtauth.Config{PublicKeyPEM: pemOf(t, &ecKey.PublicKey)}
	byEC384 := jwtauth.Config{PublicKeyPEM: pemOf(t, &ec384Key.PublicKey)}
	byEd := jwtauth.Config{PublicKeyPEM: pemOf(t, edPub)}
	strict := jwtauth.Config{Secret: secret, Issuer: "https://id.example", Audience: "statusd"}

	tests := []struct {
		name  string
		cfg   jwtauth.Config
		token string
		ok    bool
	}{
		{"HS256 with the secret", bySecret, sign(t, jwt.SigningMethodHS256, secret, valid()), true},
		{"RS256 with the RSA key", byRSA, sign(t, jwt.SigningMethodRS256, rsaKey, valid()), true},
		{"ES256 with the P-256 key", byEC, sign(t, jwt.SigningMethodES256, ecKey, valid()), true},
		{"ES384 with the P-384 key", byEC384, sign(t, jwt.SigningMethodES384, ec384Key, valid()), true},
		{"EdDSA with the Ed25519 key", byEd, sign(t, jwt.SigningMethodEdDSA, edKey, valid()), true},
		{"secret and RSA: HS256", bySecretAndRSA, sign(t, jwt.SigningMethodHS256, secret, valid()), true},
		{"secret and RSA: RS256", bySecretAndRSA, sign(t, jwt.SigningMethodRS256, rsaKey, valid()), true},
		{"issuer and audience match", strict, sign(t, jwt.SigningMethodHS256, secret, with(with(valid(), "iss", "https://id.example"), "aud", []string{"other", "statusd"})), true},

		{"alg none", bySecret, unsigned(`{"alg":"none","typ":"JWT"}`, valid()), false},
		{"alg None", bySecret, unsigned(`{"alg":"None"}`, valid()), false},
		{"alg none with a key-file config", byRSA, unsigned(`{"alg":"none"}`, valid()), false},
		{"alg none with a signature appended", bySecret, unsigned(`{"alg":"none"}`, valid()) + "c2ln", false},
		{"HS256 signed with the RSA public key PEM as secret", byRSA, sign(t, jwt.SigningMethodHS256, rsaPEM, valid()), false},
		{"HS256 signed with the RSA public key PEM, secret also configured", bySecretAndRSA, sign(t, jwt.SigningMethodHS256, rsaPEM, valid()), false},
		{"HS256 signed with the RSA modulus as secret", byRSA, sign(t, jwt.SigningMethodHS256, rsaKey.N.Bytes(), valid()), false},
		{"HS384 with the right secret", bySecret, sign(t, jwt.SigningMethodHS384, secret, valid()), false},
		{"HS512 with the right secret", bySecret, sign(t, jwt.SigningMethodHS512, secret, valid()), false},
		{"HS256 with another secret", bySecret, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), valid()), false},
		{"RS256 with another RSA key", byRSA, sign(t, jwt.SigningMethodRS256, otherRSAKey, valid()), false},
		{"PS256 with the RSA key (only RS256 configured)", byRSA, sign(t, jwt.SigningMethodPS256, rsaKey, valid()), false},
		{"ES256 when an RSA key is configured", byRSA, sign(t, jwt.SigningMethodES256, ecKey, valid()), false},
		{"RS256 when only a secret is configured", bySecret, sign(t, jwt.SigningMethodRS256, rsaKey, valid()), false},
		{"ES384 signature claimed as ES256", byEC, sign(t, jwt.SigningMethodES384, ec384Key, valid()), false},
		{"expired", bySecret, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "exp", time.Now().Add(-time.Second).Unix())), false},
		{"no exp", bySecret, sign(t, jwt.SigningMethodHS256, secret, without(valid(), "exp")), false},
		{"exp not a number", bySecret, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "exp", "tomorrow")), false},
		{"not valid before an hour from now", bySecret, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "nbf", time.Now().Add(time.Hour).Unix())), false},
		{"wrong issuer", strict, sign(t, jwt.SigningMethodHS256, secret, with(with(valid(), "iss", "https://evil.example"), "aud", "statusd")), false},
		{"no issuer when one is required", strict, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "aud", "statusd")), false},
		{"wrong audience", strict, sign(t, jwt.SigningMethodHS256, secret, with(with(valid(), "iss", "https://id.example"), "aud", "billing")), false},
		{"no audience when one is required", strict, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "iss", "https://id.example")), false},
		{"subscribe is a string, not an array", bySecret, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "subscribe", "projects:*")), false},
		{"subscribe holds a number", bySecret, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "subscribe", []any{1})), false},
		{"subscribe holds an invalid selector", bySecret, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "subscribe", []string{"projects:a*"})), false},
		{"publish holds a foreign topic", bySecret, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "publish", []string{"users:1"})), false},
		{"claims are not an object", bySecret, b64(`{"alg":"HS256"}`) + "." + b64(`[]`) + ".x", false},
		{"empty", bySecret, "", false},
		{"one segment", bySecret, "abc", false},
		{"two segments", bySecret, "abc.def", false},
		{"four segments", bySecret, sign(t, jwt.SigningMethodHS256, secret, valid()) + ".x", false},
		{"not base64", bySecret, "!!!.???.***", false},
		{"longer than 8 KiB", bySecret, sign(t, jwt.SigningMethodHS256, secret, with(valid(), "pad", strings.Repeat("x", 9<<10))), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, tt.cfg)
			a, err := v.Verify(context.Background(), tt.token)
			if !tt.ok {
				require.Error(t, err)
				assert.ErrorIs(t, err, jwtauth.ErrInvalidToken)
				assert.Equal(t, domain.Access{}, a)
				if tt.token != "" {
					assert.NotContains(t, err.Error(), tt.token, "the error never quotes the token")
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "alice", a.Subject)
			assert.True(t, a.Subscribe.Covers(domain.AllProjects))
			assert.True(t, a.Publish.CoversProject("42"))
			assert.False(t, a.Publish.CoversProject("43"))
			assert.WithinDuration(t, time.Now().Add(time.Hour), a.Expires, 2*time.Second)
		})
	}
}

// A tampered payload (a grant widened after signing) fails the signature.
func TestVerifyRejectsATamperedPayload(t *testing.T) {
	v := newVerifier(t, jwtauth.Config{Secret: secret})
	tok := sign(t, jwt.SigningMethodHS256, secret, with(valid(), "subscribe", []string{"projects:A"}))
	parts := strings.Split(tok, ".")
	c := with(valid(), "subscribe", []string{"projects:*"})
	payload, _ := json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	_, err := v.Verify(context.Background(), strings.Join(parts, "."))
	require.ErrorIs(t, err, jwtauth.ErrInvalidToken)
	assert.ErrorIs(t, err, jwt.ErrTokenSignatureInvalid)
}

func TestTokenWithoutGrantsGrantsNothing(t *testing.T) {
	v := newVerifier(t, jwtauth.Config{Secret: secret})
	a, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": time.Now().Add(time.Minute).Unix()}))
	require.NoError(t, err)
	assert.True(t, a.Subscribe.IsEmpty())
	assert.True(t, a.Publish.IsEmpty())
	a, err = v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": time.Now().Add(time.Minute).Unix(), "subscribe": nil, "publish": []string{}}))
	require.NoError(t, err)
	assert.True(t, a.Subscribe.IsEmpty())
	assert.True(t, a.Publish.IsEmpty())
}

func TestConfigErrors(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	privDER, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	require.NoError(t, err)
	for name, cfg := range map[string]jwtauth.Config{
		"no key":                {},
		"empty secret":          {Secret: []byte{}},
		"31-byte secret":        {Secret: []byte(strings.Repeat("s", 31))},
		"garbage PEM":           {PublicKeyPEM: []byte("not a key")},
		"private key PEM":       {PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})},
		"corrupt public key":    {PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})},
		"1024-bit RSA key":      {PublicKeyPEM: pemOf(t, &small.PublicKey)},
		"JWKS URL not http(s)":  {JWKSURL: "file:///etc/passwd"},
		"JWKS URL without host": {JWKSURL: "https://"},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := jwtauth.New(cfg, nil)
			require.ErrorIs(t, err, jwtauth.ErrConfig)
			assert.Nil(t, v)
		})
	}
	v := newVerifier(t, jwtauth.Config{Secret: []byte(strings.Repeat("s", 32))})
	assert.Equal(t, []string{"HS256"}, v.Algorithms(), "32 bytes is enough")
}

func TestParsePublicKeyFormats(t *testing.T) {
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})
	_, alg, err := jwtauth.ParsePublicKey(pkcs1)
	require.NoError(t, err)
	assert.Equal(t, "RS256", alg)

	tmpl := &x509.Certificate{SerialNumber: bigOne(), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	require.NoError(t, err)
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	_, alg, err = jwtauth.ParsePublicKey(cert)
	require.NoError(t, err)
	assert.Equal(t, "ES256", alg)
	v := newVerifier(t, jwtauth.Config{PublicKeyPEM: cert})
	_, err = v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, ecKey, valid()))
	assert.NoError(t, err, "a certificate's key verifies")

	_, alg, err = jwtauth.ParsePublicKey(pemOf(t, edPub))
	require.NoError(t, err)
	assert.Equal(t, "EdDSA", alg)
}

func TestSignHS256(t *testing.T) {
	now := time.Now()
	tok, err := jwtauth.SignHS256(secret, jwtauth.Grant{Subject: "ci", Subscribe: []string{"projects:*"}, Publish: []string{"projects:42"}, TTL: time.Hour, Issuer: "me", Audience: "statusd"})
	require.NoError(t, err)
	v := newVerifier(t, jwtauth.Config{Secret: secret, Issuer: "me", Audience: "statusd"})
	a, err := v.Verify(context.Background(), tok)
	require.NoError(t, err)
	assert.Equal(t, "ci", a.Subject)
	assert.True(t, a.Subscribe.Covers(domain.AllProjects))
	assert.True(t, a.Publish.CoversProject("42"))
	assert.WithinDuration(t, now.Add(time.Hour), a.Expires, 2*time.Second)

	_, err = jwtauth.SignHS256(secret[:31], jwtauth.Grant{TTL: time.Hour})
	assert.ErrorIs(t, err, jwtauth.ErrConfig)
	_, err = jwtauth.SignHS256(secret, jwtauth.Grant{TTL: 0})
	assert.Error(t, err)
	_, err = jwtauth.SignHS256(secret, jwtauth.Grant{TTL: time.Hour, Subscribe: []string{"projects:a*"}})
	assert.ErrorIs(t, err, domain.ErrInvalidGrant)
	_, err = jwtauth.SignHS256(secret, jwtauth.Grant{TTL: time.Hour, Publish: []string{"42"}})
	assert.ErrorIs(t, err, domain.ErrInvalidGrant)
}

func bigOne() *big.Int { return big.NewInt(1) }
