package httpapi_test

// The dashboard with authorization on, in headless chromium: the token
// comes from ?access_token= on the page URL (then leaves the address bar
// and follows the tab's links) or from the statusd_token cookie; a refused
// token (401 or 403, or one that expires while the page is open) shows a
// clear "not authorized" state, and the page stops reconnecting.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestDashboardAuthorizationInBrowser(t *testing.T) {
	httpapitest.ChromiumPath(t) // skip before starting anything
	out := testOutputDir(t)

	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	require.NoError(t, err)
	api := httpapi.New(httpapi.Config{Retry: 200 * time.Millisecond, Heartbeat: time.Second, Auth: newVerifier(t)}, bus, nil)
	var streamRequests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/events") {
			streamRequests.Add(1)
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		api.CloseStreams()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, bus.Close(ctx))
	})
	for _, id := range []string{"p-a", "p-b"} {
		require.NoError(t, bus.BroadcastProjectUpdate(domain.Project{ID: id, Name: "app_" + id, Status: domain.StatusReady}))
	}
	require.Eventually(t, func() bool { return len(bus.LatestAll()) == 2 }, waitFor, time.Millisecond)

	all := mint(t, []string{"projects:*"}, nil, time.Hour)
	onlyA := mint(t, []string{"projects:p-a"}, nil, time.Hour)

	browser := httpapitest.StartBrowser(t, chromedp.WindowSize(1100, 640))

	// tab opens a new tab: its own sessionStorage, the browser's cookies.
	tab := func() context.Context {
		ctx, cancel := chromedp.NewContext(browser)
		t.Cleanup(cancel)
		require.NoError(t, chromedp.Do(ctx))
		return ctx
	}
	// waitAcross is waitUntil while the page navigates: a poll cut by the
	// navigation is retried.
	waitAcross := func(ctx context.Context, what, expr string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, cancel := context.WithTimeout(ctx, time.Until(deadline))
			_, err := chromedp.Run(c, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond)))
			cancel()
			if err == nil {
				return
			}
			require.True(t, time.Now().Before(deadline), "waiting until %s (%s): %v", what, expr, err)
			time.Sleep(50 * time.Millisecond)
		}
	}
	eval := func(ctx context.Context, expr string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		require.NoError(t, err)
		return s
	}
	// stopsReconnecting asserts that the page makes no stream request for
	// a while: it has given up rather than retrying forever.
	stopsReconnecting := func() {
		t.Helper()
		before := streamRequests.Load()
		time.Sleep(2 * time.Second) // ten times the retry hint
		assert.Equal(t, before, streamRequests.Load(), "no more stream requests")
	}
	state := `document.getElementById('connection').dataset.state`
	rowCount := `document.querySelectorAll('#rows tr[data-project-id]').length`

	// No token at all: 401, "not authorized", no reconnection loop.
	anon := tab()
	httpapitest.Do(anon, t, chromedp.Navigate(srv.URL+"/"))
	httpapitest.WaitUntil(anon, t, "not authorized", state+` === 'unauthorized' && !document.getElementById('auth').hidden`)
	assert.Contains(t, eval(anon, `document.getElementById('auth-reason').textContent`), "token is required")
	assert.Equal(t, "not authorized", eval(anon, `document.getElementById('connection-text').textContent`))
	stopsReconnecting()
	png, err := chromedp.Run(anon, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(out, "dashboard-unauthorized.png"), png, 0o644))

	// A token on the page URL: the page is live, the token leaves the
	// address bar, and the deep links of the same tab keep it.
	byURL := tab()
	httpapitest.Do(byURL, t, chromedp.Navigate(srv.URL+"/?access_token="+all))
	httpapitest.WaitUntil(byURL, t, "live with both projects", state+` === 'live' && `+rowCount+` === 2`)
	assert.Equal(t, "", eval(byURL, `location.search`), "the token is removed from the address bar")
	assert.True(t, eval(byURL, `document.getElementById('auth').hidden ? 'hidden' : 'shown'`) == "hidden")
	require.NoError(t, bus.BroadcastProjectUpdate(domain.Project{ID: "p-b", Name: "app_p-b", Status: domain.StatusCompiling}))
	httpapitest.WaitUntil(byURL, t, "a live update", `document.querySelector('tr[data-project-id="p-b"]').dataset.status === 'compiling'`)
	httpapitest.Do(byURL, t, chromedp.Click(chromedp.CSS(`tr[data-project-id="p-a"] td.name a`)))
	waitAcross(byURL, "the deep link is live", `location.search === '?project=p-a' && `+state+` === 'live' && `+rowCount+` === 1`)

	// A token for one project: 403 on the all-projects page, with the
	// reason; its own project's page is live.
	narrow := tab()
	httpapitest.Do(narrow, t, chromedp.Navigate(srv.URL+"/?access_token="+onlyA))
	httpapitest.WaitUntil(narrow, t, "forbidden", state+` === 'unauthorized'`)
	assert.Contains(t, eval(narrow, `document.getElementById('auth-reason').textContent`), "projects:*")
	assert.Equal(t, "forbidden", eval(narrow, `document.getElementById('connection-text').textContent`))
	stopsReconnecting()
	// It offers the projects the token does cover (GET /projects with the
	// token as Bearer); following one, with the token kept for the tab,
	// is live.
	httpapitest.WaitUntil(narrow, t, "the covered projects offered", `!document.getElementById('auth-covered').hidden`)
	assert.Equal(t, "p-a", eval(narrow, `Array.from(document.querySelectorAll('#auth-projects a')).map(a => a.dataset.projectId).join(',')`))
	png, err = chromedp.Run(narrow, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(out, "dashboard-forbidden.png"), png, 0o644))
	httpapitest.Do(narrow, t, chromedp.Click(chromedp.CSS(`#auth-projects a[data-project-id="p-a"]`)))
	waitAcross(narrow, "its project is live", `location.search === '?project=p-a' && `+state+` === 'live' && `+rowCount+` === 1`)

	// The cookie: no token in the URL, the browser sends statusd_token.
	u := srv.URL + "/"
	byCookie := tab()
	httpOnly := true
	_, err = chromedp.Call(byCookie, network.SetCookie, network.SetCookieParams{Name: httpapi.TokenCookie, Value: all, URL: u, HTTPOnly: &httpOnly})
	require.NoError(t, err)
	httpapitest.Do(byCookie, t, chromedp.Navigate(u))
	httpapitest.WaitUntil(byCookie, t, "live through the cookie", state+` === 'live' && `+rowCount+` === 2`)
	_, err = chromedp.Call(byCookie, network.DeleteCookies, network.DeleteCookiesParams{Name: httpapi.TokenCookie, URL: u})
	require.NoError(t, err)

	// A token that expires while the page is open: the stream ends, the
	// reconnection is refused, the page says why and stops.
	short := mint(t, []string{"projects:*"}, nil, 6*time.Second)
	expiring := tab()
	httpapitest.Do(expiring, t, chromedp.Navigate(srv.URL+"/?access_token="+short))
	httpapitest.WaitUntil(expiring, t, "live", state+` === 'live' && `+rowCount+` === 2`)
	httpapitest.WaitUntil(expiring, t, "not authorized once the token expired", state+` === 'unauthorized'`)
	assert.Contains(t, eval(expiring, `document.getElementById('auth-reason').textContent`), "expired")
	assert.Equal(t, "", eval(expiring, `sessionStorage.getItem('statusd_token') || ''`), "a refused token is forgotten")
	stopsReconnecting()
}
