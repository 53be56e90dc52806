package httpapi_test

// CORS in a real headless browser: a page of a listed origin POSTs with a
// preflight (Authorization, JSON) and streams with EventSource
// withCredentials; a page of an unlisted origin can do neither, and its
// POST never reaches the server.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// corsProbe is the script a page runs against the API at api: it POSTs an
// event for project id (JSON and an Authorization header: a preflighted
// request), streams that project with EventSource withCredentials, and
// reads GET /projects; it resolves to what worked.
const corsProbe = `(async (api, id, body) => {
  const out = {post: 0, postError: '', streamed: '', streamError: false, projects: -1};
  const es = new EventSource(api + '/events/projects/' + id + '?snapshot=false', {withCredentials: true});
  const streamed = new Promise(resolve => {
    es.addEventListener('project_updated', e => resolve(JSON.parse(e.data).project.id));
    es.onerror = () => { out.streamError = true; resolve(''); };
    setTimeout(() => resolve(''), 5000);
  });
  await new Promise(resolve => { es.onopen = resolve; setTimeout(resolve, 2000); });
  try {
    const r = await fetch(api + '/events', {method: 'POST', credentials: 'include',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer not-checked-here'}, body});
    out.post = r.status;
  } catch (e) { out.postError = String(e); }
  out.streamed = await streamed;
  es.close();
  try {
    const r = await fetch(api + '/projects', {credentials: 'include'});
    out.projects = (await r.json()).length;
  } catch (e) { out.projects = -1; }
  return out;
})`

type corsResult struct {
	Post        int    `json:"post"`
	PostError   string `json:"postError"`
	Streamed    string `json:"streamed"`
	StreamError bool   `json:"streamError"`
	Projects    int    `json:"projects"`
}

func TestCORSInBrowser(t *testing.T) {
	httpapitest.ChromiumPath(t) // skip before starting anything
	page := func() *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte(`<!doctype html><title>other site</title>`))
		}))
		t.Cleanup(s.Close)
		return s
	}
	listed, unlisted := page(), page()
	var posts, preflights atomic.Int64
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) { c.CORSOrigins = []string{listed.URL} })
	// Count what reaches the API, in front of it.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost:
			posts.Add(1)
		case r.Method == http.MethodOptions:
			preflights.Add(1)
		}
		g.api.ServeHTTP(w, r)
	}))
	t.Cleanup(api.Close)
	t.Cleanup(g.api.CloseStreams)

	ctx := httpapitest.StartBrowser(t)

	probe := func(pageURL, id string) corsResult {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		require.NoError(t, chromedp.Do(c, chromedp.Navigate(pageURL)))
		body := strings.ReplaceAll(envelope(id, 1, ""), "'", `\'`)
		res, err := chromedp.Run(c, chromedp.Evaluate[corsResult](
			corsProbe+`('`+api.URL+`', '`+id+`', '`+body+`')`, chromedp.EvalAwaitPromise))
		require.NoError(t, err)
		return res
	}

	ok := probe(listed.URL, "from-listed")
	assert.Equal(t, http.StatusAccepted, ok.Post, "the listed origin's POST (after its preflight): %s", ok.PostError)
	assert.Equal(t, "from-listed", ok.Streamed, "the listed origin's EventSource receives the event")
	assert.Equal(t, 1, ok.Projects, "the listed origin reads GET /projects")
	assert.GreaterOrEqual(t, preflights.Load(), int64(1), "the browser sent a preflight")
	assert.Equal(t, int64(1), posts.Load())

	bad := probe(unlisted.URL, "from-unlisted")
	assert.Zero(t, bad.Post, "the unlisted origin's POST is refused by the browser")
	assert.NotEmpty(t, bad.PostError)
	assert.Empty(t, bad.Streamed, "the unlisted origin's EventSource gets nothing")
	assert.True(t, bad.StreamError)
	assert.Equal(t, -1, bad.Projects, "the unlisted origin cannot read GET /projects")
	assert.Equal(t, int64(1), posts.Load(), "the preflight failed, so the POST was never sent")
	_, found := g.bus.Latest("from-unlisted")
	assert.False(t, found, "nothing was broadcast for the unlisted origin")
}
