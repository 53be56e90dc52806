package httpapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTokenFrom(t *testing.T) {
	req := func(auth []string, query, cookie string) *http.Request {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{Path: "/events/projects", RawQuery: query}}
		for _, a := range auth {
			r.Header.Add("Authorization", a)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		return r
	}
	tests := []struct {
		name   string
		r      *http.Request
		token  string
		errHas string
	}{
		{"header", req([]string{"Bearer h"}, "", ""), "h", ""},
		{"header, any case, extra spaces", req([]string{"  BEARER   h  "}, "", ""), "h", ""},
		{"query", req(nil, "access_token=q", ""), "q", ""},
		{"query, escaped", req(nil, "access_token=a%2Eb", ""), "a.b", ""},
		{"cookie", req(nil, "", "statusd_token=c"), "c", ""},
		{"header before query and cookie", req([]string{"Bearer h"}, "access_token=q", "statusd_token=c"), "h", ""},
		{"query before cookie", req(nil, "access_token=q", "statusd_token=c"), "q", ""},
		{"other schemes ignored", req([]string{"Basic x", "Bearer h"}, "", ""), "h", ""},
		{"other scheme only, then query", req([]string{"Basic x"}, "access_token=q", ""), "q", ""},
		{"nothing", req(nil, "", ""), "", "a token is required"},
		{"empty cookie", req(nil, "", "statusd_token="), "", "a token is required"},
		{"other cookie", req(nil, "", "session=x"), "", "a token is required"},
		{"empty bearer", req([]string{"Bearer"}, "access_token=q", ""), "", "holds no token"},
		{"two bearers", req([]string{"Bearer a", "Bearer b"}, "", ""), "", "more than one"},
		{"empty query", req(nil, "access_token=", "statusd_token=c"), "", "is empty"},
		{"two queries", req(nil, "access_token=a&access_token=b", ""), "", "more than one"},
		{"name is case-sensitive in the query", req(nil, "Access_Token=q", ""), "", "a token is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tokenFrom(tt.r)
			if tt.errHas != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.errHas)
				assert.Empty(t, tok)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.token, tok)
		})
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"/events/projects":                                      "/events/projects",
		"/events/projects?snapshot=false":                       "/events/projects?snapshot=false",
		"/events/projects?access_token=abc.def.ghi":             "/events/projects?access_token=REDACTED",
		"/events?topic=projects:a&access_token=x&lastEventId=1": "/events?topic=projects:a&access_token=REDACTED&lastEventId=1",
		"/p?ACCESS_TOKEN=x&access%5Ftoken=y;access_token=z":     "/p?access_token=REDACTED&access_token=REDACTED;access_token=REDACTED",
		"/p?access_token":                                       "/p?access_token=REDACTED",
		"/p?a=1&&access_token=x&":                               "/p?a=1&&access_token=REDACTED&",
	} {
		u, err := url.ParseRequestURI(in)
		require.NoError(t, err)
		assert.Equal(t, want, redactURL(u), in)
	}
}

// FuzzTokenFrom: whatever the Authorization header, query and cookie hold,
// reading the token never panics; a token found is non-empty and comes
// from the first place that holds one, in the documented order; and the
// URL as logged holds no access_token value.
func FuzzTokenFrom(f *testing.F) {
	f.Add("Bearer abc", "access_token=q", "statusd_token=c")
	f.Add("", "access_token=q&access_token=r", "")
	f.Add("Basic x", "a=1;access_token=q", "statusd_token=")
	f.Add("bearer ", "access%5Ftoken=%zz", "statusd_token=\"quoted\"")
	f.Add("Bearer a b", "", "x=1; statusd_token=c; statusd_token=d")
	f.Fuzz(func(t *testing.T, auth, rawQuery, cookie string) {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{Path: "/events", RawQuery: rawQuery}}
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}
		tok, err := tokenFrom(r)
		if err == nil {
			require.NotEmpty(t, tok)
			scheme, cred, _ := strings.Cut(strings.TrimSpace(auth), " ")
			q, inQuery := r.URL.Query()[TokenQueryParam]
			switch {
			case strings.EqualFold(scheme, "Bearer"):
				require.Equal(t, strings.TrimSpace(cred), tok)
			case inQuery:
				require.Equal(t, []string{tok}, q)
			default:
				c, cerr := r.Cookie(TokenCookie)
				require.NoError(t, cerr)
				require.Equal(t, c.Value, tok)
			}
		} else {
			require.Empty(t, tok)
		}

		logged := redactURL(r.URL)
		_, query, _ := strings.Cut(logged, "?")
		for _, seg := range strings.FieldsFunc(query, func(r rune) bool { return r == '&' || r == ';' }) {
			name, value, _ := strings.Cut(seg, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if strings.EqualFold(name, TokenQueryParam) {
				require.Equal(t, "REDACTED", value, "logged: %q", logged)
			}
		}
	})
}
