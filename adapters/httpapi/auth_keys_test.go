package httpapi_test

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
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// Each kind of key over real HTTP: a token signed with it opens a stream;
// "alg": "none" and an HS256 token whose HMAC secret is the public key
// (algorithm confusion) get 401.
func TestKeyKindsOverHTTP(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pemOf := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}

	// A JWKS endpoint on loopback publishing the RSA key as "k1".
	jwk, err := jwkset.NewJWKFromKey(&rsaKey.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgRS256}})
	require.NoError(t, err)
	store := jwkset.NewMemoryStorage()
	require.NoError(t, store.KeyWrite(context.Background(), jwk))
	set, err := store.JSONPublic(context.Background())
	require.NoError(t, err)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(set) }))
	defer idp.Close()

	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "subscribe": []string{"projects:*"}}
	}
	signed := func(m jwt.SigningMethod, key any, kid string) string {
		tok := jwt.NewWithClaims(m, claims())
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		require.NoError(t, err)
		return s
	}
	payload, err := json.Marshal(claims())
	require.NoError(t, err)
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."

	for _, c := range []struct {
		name     string
		cfg      jwtauth.Config
		good     string
		confused string // HS256 with the public key as secret
	}{
		{"RSA key file", jwtauth.Config{PublicKeyPEM: pemOf(&rsaKey.PublicKey)}, signed(jwt.SigningMethodRS256, rsaKey, ""), signed(jwt.SigningMethodHS256, pemOf(&rsaKey.PublicKey), "")},
		{"ECDSA key file", jwtauth.Config{PublicKeyPEM: pemOf(&ecKey.PublicKey)}, signed(jwt.SigningMethodES256, ecKey, ""), signed(jwt.SigningMethodHS256, pemOf(&ecKey.PublicKey), "")},
		{"Ed25519 key file", jwtauth.Config{PublicKeyPEM: pemOf(edPub)}, signed(jwt.SigningMethodEdDSA, edKey, ""), signed(jwt.SigningMethodHS256, pemOf(edPub), "")},
		{"JWKS", jwtauth.Config{JWKSURL: idp.URL}, signed(jwt.SigningMethodRS256, rsaKey, "k1"), signed(jwt.SigningMethodHS256, pemOf(&rsaKey.PublicKey), "k1")},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := jwtauth.New(c.cfg, nil)
			require.NoError(t, err)
			defer v.Close()
			g := newGateway(t, func(_ *pubsub.Config, a *httpapi.Config) { a.Auth = v })
			g.openStream(t, "/events/projects", bearer(c.good)).close()
			for _, bad := range []string{c.confused, none} {
				resp, body := g.do(t, http.MethodGet, "/events/projects", bad, "")
				requireStatus(t, resp, body, http.StatusUnauthorized)
			}
		})
	}
}
