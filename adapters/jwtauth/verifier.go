package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// MinSecretBytes is the shortest HMAC secret accepted: 256 bits, the size
// of an HS256 key (RFC 7518 section 3.2). A shorter one can be guessed
// offline from any token it signed.
const MinSecretBytes = 32

// MaxTokenBytes bounds the tokens Verify parses; a longer one is rejected
// before any decoding.
const MaxTokenBytes = 8 << 10

// MinRSABits is the smallest RSA public key accepted.
const MinRSABits = 2048

// ErrInvalidToken is wrapped by every error about a token that is not
// accepted: missing, malformed, expired, not yet valid, badly signed,
// signed with an algorithm or key that is not configured, for another
// issuer or audience, or with malformed grants.
var ErrInvalidToken = errors.New("invalid token")

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid JWT configuration")

// jwksAlgorithms are the algorithms accepted from keys of a JWKS endpoint:
// asymmetric ones only, since a JWKS is public.
var jwksAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config says which keys verify tokens and what else is checked. At least
// one of Secret, PublicKeyPEM and JWKSURL must be set; several may be.
type Config struct {
	// Secret verifies HS256 tokens; at least MinSecretBytes long.
	Secret []byte
	// PublicKeyPEM is a PEM "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY" (PKCS #1)
	// or "CERTIFICATE" block: RSA keys (at least MinRSABits) verify RS256,
	// ECDSA keys ES256/ES384/ES512 by curve, Ed25519 keys EdDSA.
	PublicKeyPEM []byte
	// JWKSURL is a JSON Web Key Set endpoint. Its keys are fetched at
	// start (a failure is logged, not fatal: tokens are refused until a
	// fetch succeeds), again every JWKSRefresh, and when a token names a
	// "kid" that is not known, at most once per JWKSUnknownKIDInterval.
	JWKSURL string
	// JWKSRefresh is the background refresh interval. Default 15m.
	JWKSRefresh time.Duration
	// JWKSUnknownKIDInterval is the least time between two refreshes
	// caused by unknown key ids, so that tokens with made-up ids cannot
	// make statusd hammer the endpoint. Default 1m.
	JWKSUnknownKIDInterval time.Duration
	// HTTPClient fetches the JWKS. Default: a client with a 10s timeout.
	HTTPClient *http.Client
	// Issuer, when set, must equal the token's "iss".
	Issuer string
	// Audience, when set, must be one of the token's "aud".
	Audience string
	// Now is the clock; default time.Now (tests move it).
	Now func() time.Time
}

// Verifier verifies tokens; it is safe for concurrent use. Close releases
// the JWKS refresher.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
	log    *slog.Logger

	secret []byte
	pub    any
	pubAlg string
	jwks   keyfunc.Keyfunc
	stop   context.CancelFunc
}

// New checks cfg and returns a Verifier; with a JWKS URL it fetches the
// keys once before it returns (bounded by the HTTP client's timeout) and
// starts refreshing them in the background until Close.
func New(cfg Config, logger *slog.Logger) (*Verifier, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.JWKSRefresh <= 0 {
		cfg.JWKSRefresh = 15 * time.Minute
	}
	if cfg.JWKSUnknownKIDInterval <= 0 {
		cfg.JWKSUnknownKIDInterval = time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg, log: logger, stop: func() {}}
	var methods []string
	if cfg.Secret != nil {
		if len(cfg.Secret) < MinSecretBytes {
			return nil, fmt.Errorf("%w: the HS256 secret is %d bytes; it must be at least %d (e.g. openssl rand -base64 48)", ErrConfig, len(cfg.Secret), MinSecretBytes)
		}
		v.secret = slices.Clone(cfg.Secret)
		methods = append(methods, "HS256")
	}
	if cfg.PublicKeyPEM != nil {
		key, alg, err := ParsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.pub, v.pubAlg = key, alg
		methods = append(methods, alg)
	}
	if cfg.JWKSURL != "" {
		if err := v.startJWKS(); err != nil {
			return nil, err
		}
		for _, alg := range jwksAlgorithms {
			if !slices.Contains(methods, alg) {
				methods = append(methods, alg)
			}
		}
	}
	if len(methods) == 0 {
		return nil, fmt.Errorf("%w: no key: give a secret, a public key or a JWKS URL", ErrConfig)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(cfg.Now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

func (v *Verifier) startJWKS() error {
	u, err := url.Parse(v.cfg.JWKSURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%w: the JWKS URL %q is not an http(s) URL", ErrConfig, v.cfg.JWKSURL)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		v.log.Warn("the JWKS URL is plain http: whoever can alter that traffic can make statusd accept their tokens; use https", "url", v.cfg.JWKSURL)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// A failed first fetch is logged, not fatal: the identity provider may
	// be down while statusd restarts. Tokens are refused until a fetch
	// succeeds, in the background or on a token's unknown key id.
	yes := true
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{v.cfg.JWKSURL}, keyfunc.Override{
		Client:                    v.cfg.HTTPClient,
		HTTPTimeout:               v.cfg.HTTPClient.Timeout,
		NoErrorReturnFirstHTTPReq: &yes,
		RefreshInterval:           v.cfg.JWKSRefresh,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(v.cfg.JWKSUnknownKIDInterval), 1),
		// A request with an unknown kid waits at most this long for its
		// turn to refresh (and for the refresh itself); when its turn is
		// further away it is refused at once rather than held.
		RateLimitWaitMax: 5 * time.Second,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				v.log.Warn("fetching the JWKS failed; tokens signed with keys not fetched yet are refused", "url", u, "error", err)
			}
		},
	})
	if err != nil {
		cancel()
		return fmt.Errorf("%w: JWKS %s: %w", ErrConfig, v.cfg.JWKSURL, err)
	}
	v.jwks, v.stop = kf, cancel
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close stops the JWKS refresher. It is idempotent.
func (v *Verifier) Close() { v.stop() }

// Algorithms returns the algorithms tokens may be signed with.
func (v *Verifier) Algorithms() []string {
	var out []string
	if v.secret != nil {
		out = append(out, "HS256")
	}
	if v.pub != nil {
		out = append(out, v.pubAlg)
	}
	if v.jwks != nil {
		for _, alg := range jwksAlgorithms {
			if !slices.Contains(out, alg) {
				out = append(out, alg)
			}
		}
	}
	return out
}

// claims are the claims statusd reads: the registered ones, and the
// grants. A "subscribe" or "publish" that is not an array of strings makes
// the token malformed.
type claims struct {
	jwt.RegisteredClaims
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
}

// Verify checks token and returns what it grants. Every error wraps
// ErrInvalidToken; its text says why, without the token.
func (v *Verifier) Verify(ctx context.Context, token string) (domain.Access, error) {
	if token == "" {
		return domain.Access{}, fmt.Errorf("%w: no token", ErrInvalidToken)
	}
	if len(token) > MaxTokenBytes {
		return domain.Access{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, MaxTokenBytes)
	}
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.keyFor(ctx)); err != nil {
		return domain.Access{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return accessOf(&c)
}

// accessOf turns verified claims into an Access.
func accessOf(c *claims) (domain.Access, error) {
	sub, err := domain.ParseGrants(c.Subscribe)
	if err != nil {
		return domain.Access{}, fmt.Errorf("%w: claim subscribe: %w", ErrInvalidToken, err)
	}
	pub, err := domain.ParseGrants(c.Publish)
	if err != nil {
		return domain.Access{}, fmt.Errorf("%w: claim publish: %w", ErrInvalidToken, err)
	}
	a := domain.Access{Subject: c.Subject, Subscribe: sub, Publish: pub}
	if c.ExpiresAt != nil {
		a.Expires = c.ExpiresAt.Time
	}
	return a, nil
}

// keyFor picks the key for a token by its algorithm, which the parser has
// already checked against the configured ones; a key is only ever used
// with its own algorithm.
func (v *Verifier) keyFor(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		_, hasKID := t.Header["kid"]
		switch {
		case alg == "HS256" && v.secret != nil:
			return v.secret, nil
		case v.pub != nil && alg == v.pubAlg && (v.jwks == nil || !hasKID):
			return v.pub, nil
		case v.jwks != nil && slices.Contains(jwksAlgorithms, alg):
			return v.jwks.KeyfuncCtx(ctx)(t)
		}
		return nil, fmt.Errorf("no key configured for algorithm %q", alg)
	}
}

// ParsePublicKey reads the first PEM block of pemBytes and returns its
// public key with the one algorithm it verifies.
func ParsePublicKey(pemBytes []byte) (key any, alg string, err error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, "", fmt.Errorf("%w: the public key file holds no PEM block", ErrConfig)
	}
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, "", fmt.Errorf("%w: PEM block %q is not a public key (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE; never give statusd a private key)", ErrConfig, block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%w: parsing the public key: %w", ErrConfig, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return nil, "", fmt.Errorf("%w: the RSA key has %d bits; at least %d are needed", ErrConfig, k.N.BitLen(), MinRSABits)
		}
		return k, "RS256", nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, "ES256", nil
		case elliptic.P384():
			return k, "ES384", nil
		case elliptic.P521():
			return k, "ES512", nil
		}
		return nil, "", fmt.Errorf("%w: unsupported ECDSA curve %s", ErrConfig, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return k, "EdDSA", nil
	}
	return nil, "", fmt.Errorf("%w: unsupported public key type %T", ErrConfig, key)
}
