package jwtauth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Grant is what a minted token says: its grants, its subject, and how long
// it lives.
type Grant struct {
	// Subject becomes "sub"; optional.
	Subject string
	// Subscribe and Publish become the claims of the same names; each
	// selector must be "projects:*" or "projects:<id>".
	Subscribe, Publish []string
	// TTL is how long the token is valid from Now; it must be positive.
	TTL time.Duration
	// Issuer and Audience become "iss" and "aud" when set.
	Issuer, Audience string
	// Now is when the token is issued; zero means time.Now().
	Now time.Time
}

// SignHS256 mints a token for g signed with secret (at least
// MinSecretBytes), as `statusd token` does: for trying statusd out, for
// tests, and for services that hold the secret.
func SignHS256(secret []byte, g Grant) (string, error) {
	if len(secret) < MinSecretBytes {
		return "", fmt.Errorf("%w: the HS256 secret is %d bytes; it must be at least %d", ErrConfig, len(secret), MinSecretBytes)
	}
	if g.TTL <= 0 {
		return "", errors.New("the token's time to live must be positive")
	}
	if _, err := domain.ParseGrants(g.Subscribe); err != nil {
		return "", fmt.Errorf("subscribe: %w", err)
	}
	if _, err := domain.ParseGrants(g.Publish); err != nil {
		return "", fmt.Errorf("publish: %w", err)
	}
	now := g.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   g.Subject,
			Issuer:    g.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(g.TTL)),
		},
		Subscribe: g.Subscribe,
		Publish:   g.Publish,
	}
	if g.Audience != "" {
		c.Audience = jwt.ClaimStrings{g.Audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}
