// Package jwtauth verifies the JSON Web Tokens that clients of statusd
// present, and turns their claims into a domain.Access: which projects the
// client may read ("subscribe") and broadcast about ("publish"), and until
// when ("exp").
//
// Keys come from configuration only, and each key fixes its algorithm: an
// HMAC secret verifies HS256, a PEM public key verifies RS256 (RSA), ES256,
// ES384 or ES512 (ECDSA, by curve) or EdDSA (Ed25519), and a JWKS endpoint
// verifies the asymmetric algorithms of the keys it publishes. A token's
// "alg" header is never trusted to choose anything else: "alg": "none" and a
// token HMAC-signed with a public key as its secret (the classic algorithm
// confusion) are rejected.
//
// The Verifier is the adapter behind the HTTP edge's Authenticator
// interface (package httpapi); reading the token from a request and mapping
// failures to 401 and 403 stay at that edge, and which selectors a set of
// grants covers is domain language (domain.Grants).
package jwtauth
