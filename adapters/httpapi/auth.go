package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Authenticator verifies the bearer token of a request and says what it
// grants. Every error means the token is not accepted (401); its text may
// be shown to the client and must not contain the token. It must be safe
// for concurrent use. *jwtauth.Verifier implements it.
type Authenticator interface {
	Verify(ctx context.Context, token string) (domain.Access, error)
}

// Where a request's token is read from, in this order: the Authorization
// header ("Bearer <token>"), the access_token query parameter (EventSource
// cannot set headers), the statusd_token cookie (EventSource sends cookies).
const (
	// TokenQueryParam is the query parameter a token may be passed in.
	TokenQueryParam = "access_token"
	// TokenCookie is the cookie a token may be passed in.
	TokenCookie = "statusd_token"
)

// errNoToken is the reason of a 401 for a request without any token.
var errNoToken = errors.New("a token is required: Authorization: Bearer <token>, ?" + TokenQueryParam + "=<token> or the " + TokenCookie + " cookie")

// tokenFrom returns the request's token: the first of the Authorization
// header's Bearer credentials, the access_token query parameter and the
// statusd_token cookie that is present. Authorization headers of other
// schemes are ignored. A place that is present but holds an empty or
// ambiguous token is an error, not a reason to look further: a client
// that meant to send a token gets told it did not.
func tokenFrom(r *http.Request) (string, error) {
	var bearer []string
	for _, h := range r.Header.Values("Authorization") {
		scheme, cred, _ := strings.Cut(strings.TrimSpace(h), " ")
		if strings.EqualFold(scheme, "Bearer") {
			bearer = append(bearer, strings.TrimSpace(cred))
		}
	}
	switch {
	case len(bearer) > 1:
		return "", errors.New("more than one Authorization: Bearer header")
	case len(bearer) == 1 && bearer[0] == "":
		return "", errors.New("the Authorization: Bearer header holds no token")
	case len(bearer) == 1:
		return bearer[0], nil
	}
	if q, ok := r.URL.Query()[TokenQueryParam]; ok {
		switch {
		case len(q) > 1:
			return "", errors.New("more than one " + TokenQueryParam + " parameter")
		case q[0] == "":
			return "", errors.New("the " + TokenQueryParam + " parameter is empty")
		}
		return q[0], nil
	}
	if c, err := r.Cookie(TokenCookie); err == nil && c.Value != "" {
		return c.Value, nil
	}
	return "", errNoToken
}

// accessKey is the context key of a request's verified domain.Access.
type accessKey struct{}

// authenticated wraps a handler of a protected endpoint: with an
// Authenticator configured, a request without a valid token gets 401;
// the handler sees the token's Access (see access). With endAtExpiry (the
// streams) the request's context ends when the token expires, which ends
// a stream cleanly: EventSource reconnects and must bring a fresh token.
// Without an Authenticator it returns h: everyone has OpenAccess.
func (s *Server) authenticated(h http.HandlerFunc, endAtExpiry bool) http.HandlerFunc {
	if s.cfg.Auth == nil {
		return h
	}
	// The work is in methods: this function's frame lies under a stream
	// for as long as the stream lasts (see onFreshStack).
	return func(w http.ResponseWriter, r *http.Request) {
		var ar *http.Request
		var cancel context.CancelFunc
		if endAtExpiry {
			ar, cancel = s.authorizeStream(w, r)
		} else {
			ar, cancel = s.authorize(w, r, false)
		}
		if ar == nil {
			return
		}
		if cancel == nil {
			h(w, ar)
			return
		}
		defer cancel()
		h(w, ar)
		s.logExpired(r, ar)
	}
}

// authorizeStream is authorize for a stream, on a fresh stack: checking a
// token's signature goes deep, and a stream's goroutine keeps its stack
// (see onFreshStack).
func (s *Server) authorizeStream(w http.ResponseWriter, r *http.Request) (ar *http.Request, cancel context.CancelFunc) {
	onFreshStack(func() { ar, cancel = s.authorize(w, r, true) })
	return ar, cancel
}

// authorize answers 401 and returns nil, or returns r with the Access of
// its token, and, when endAtExpiry and the token expires, the cancel func
// of the context that ends at its expiry.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, endAtExpiry bool) (*http.Request, context.CancelFunc) {
	a, err := s.verifyToken(r)
	if err != nil {
		s.log.Debug("refused a request without a valid token", "method", r.Method, "url", redactURL(r.URL), "remote", r.RemoteAddr, "reason", err)
		unauthorized(w, err.Error())
		return nil, nil
	}
	ctx := context.WithValue(r.Context(), accessKey{}, a)
	if a.Subject != "" {
		// POST /events is rate limited per token subject (--publish-rate).
		ctx = WithRateLimitKey(ctx, a.Subject)
	}
	var cancel context.CancelFunc
	if endAtExpiry && !a.Expires.IsZero() {
		ctx, cancel = context.WithDeadline(ctx, a.Expires)
	}
	return r.WithContext(ctx), cancel
}

// verifyToken verifies the token of r.
func (s *Server) verifyToken(r *http.Request) (domain.Access, error) {
	token, err := tokenFrom(r)
	if err != nil {
		return domain.Access{}, err
	}
	return s.cfg.Auth.Verify(r.Context(), token)
}

// logExpired logs a stream that its token's expiry ended: ar is r as
// authorize returned it.
func (s *Server) logExpired(r, ar *http.Request) {
	if errors.Is(ar.Context().Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
		s.log.Debug("ended a stream: its token expired", "subject", s.access(ar).Subject, "remote", r.RemoteAddr)
	}
}

// access returns what the request's client may do: OpenAccess without an
// Authenticator, the verified token's Access with one (nothing, if the
// handler was not wrapped by authenticated).
func (s *Server) access(r *http.Request) domain.Access {
	if s.cfg.Auth == nil {
		return domain.OpenAccess()
	}
	a, _ := r.Context().Value(accessKey{}).(domain.Access)
	return a
}

// maySubscribe answers 403 and returns false unless the request's token
// may read every one of topics: a request is authorized whole or not at
// all. Snapshots and replays are computed from the same topics, so they
// obey the same grants.
func (s *Server) maySubscribe(w http.ResponseWriter, r *http.Request, topics []domain.Topic) bool {
	if t, found := s.access(r).Subscribe.Uncovered(topics); found {
		forbidden(w, "the token does not grant subscribe on "+t.String())
		return false
	}
	return true
}

// unauthorized answers 401 with the RFC 6750 challenge.
func unauthorized(w http.ResponseWriter, reason string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="statusd", error="invalid_token", error_description="`+quotable(reason)+`"`)
	writeError(w, http.StatusUnauthorized, "unauthorized: "+reason)
}

// forbidden answers 403 with the RFC 6750 challenge.
func forbidden(w http.ResponseWriter, reason string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="statusd", error="insufficient_scope", error_description="`+quotable(reason)+`"`)
	writeError(w, http.StatusForbidden, "forbidden: "+reason)
}

// quotable keeps what RFC 6750 allows in error_description: printable
// ASCII except '"' and '\'.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '_'
		}
		return r
	}, s)
}

// redactURL renders u for a log line with the value of every access_token
// parameter replaced: tokens never reach logs. Parameter names are matched
// unescaped and in any case, and ';' separates parameters too, so nothing
// that some parser could read as an access_token survives.
func redactURL(u *url.URL) string {
	if u.RawQuery == "" {
		return u.RequestURI()
	}
	var b strings.Builder
	rest := u.RawQuery
	for {
		i := strings.IndexAny(rest, "&;")
		seg := rest
		if i >= 0 {
			seg = rest[:i]
		}
		name, _, _ := strings.Cut(seg, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if strings.EqualFold(name, TokenQueryParam) {
			seg = TokenQueryParam + "=REDACTED"
		}
		b.WriteString(seg)
		if i < 0 {
			break
		}
		b.WriteByte(rest[i])
		rest = rest[i+1:]
	}
	c := *u
	c.RawQuery = b.String()
	return c.RequestURI()
}
