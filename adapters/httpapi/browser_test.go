package httpapi_test

// The dashboard in a real headless browser (Debian's chromium, driven with
// chromedp): rows appear and change live, both kinds of outage are survived
// without a gap, the deep link follows one project, and text from events is
// never interpreted as HTML. Screenshots go to testOutputDir().

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// testOutputDir is where tests leave artefacts for people to look at:
// $TEST_OUTPUT_DIR, or testoutput/ at the module root (git-ignored).
func testOutputDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TEST_OUTPUT_DIR")
	if dir == "" {
		root, err := filepath.Abs(".")
		require.NoError(t, err)
		for {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(root)
			require.NotEqual(t, parent, root, "no go.mod above the test directory")
			root = parent
		}
		dir = filepath.Join(root, "testoutput")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// switchable serves whichever API is current, so a test can swap in a new
// one (a refusing one, a fresh one) behind the same listener.
type switchable struct {
	api atomic.Pointer[httpapi.Server]
}

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.api.Load().ServeHTTP(w, r) }

// restartableGateway is a gateway whose HTTP server can be stopped and
// started again on the same port, while the Bus and its hub (history and
// latest state) live on: a restarted or replaced front end.
type restartableGateway struct {
	t     *testing.T
	bus   *pubsub.Bus
	front switchable
	addr  string
	srv   *http.Server
	done  chan struct{}
	cfg   httpapi.Config
}

func newRestartableGateway(t *testing.T, cfg httpapi.Config) *restartableGateway {
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	require.NoError(t, err)
	g := &restartableGateway{t: t, bus: bus, cfg: cfg}
	g.front.api.Store(httpapi.New(cfg, bus, nil))
	g.start("127.0.0.1:0")
	t.Cleanup(func() {
		g.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, bus.Close(ctx))
	})
	return g
}

func (g *restartableGateway) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	require.NoError(g.t, err)
	g.addr = ln.Addr().String()
	g.srv = &http.Server{Handler: &g.front, ReadHeaderTimeout: 5 * time.Second}
	g.done = make(chan struct{})
	go func() {
		defer close(g.done)
		if err := g.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			g.t.Errorf("serve: %v", err)
		}
	}()
}

// stop ends every stream and closes the listener: clients see their
// stream end and then connections refused.
func (g *restartableGateway) stop() {
	if g.srv == nil {
		return
	}
	g.front.api.Load().CloseStreams()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	assert.NoError(g.t, g.srv.Shutdown(ctx))
	<-g.done
	g.srv = nil
	// A closed API refuses streams for good; the next start gets a new one.
	g.front.api.Store(httpapi.New(g.cfg, g.bus, nil))
}

func (g *restartableGateway) url(path string) string { return "http://" + g.addr + path }

func (g *restartableGateway) broadcast(t *testing.T, p domain.Project, status domain.Status, errMsg string) {
	t.Helper()
	p.Status = status
	if errMsg != "" {
		require.NoError(t, g.bus.BroadcastProjectError(p, errMsg))
		return
	}
	require.NoError(t, g.bus.BroadcastProjectUpdate(p))
}

// row is what the browser shows of one project.
type row struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Badge   string `json:"badge"`
	Event   string `json:"event"`
	Error   string `json:"error"`
	EventID string `json:"eventId"`
	Updated string `json:"updated"`
	HTML    int    `json:"elements"` // elements inside the name and error cells
}

const readRows = `Array.from(document.querySelectorAll('#rows tr[data-project-id]')).map(tr => ({
	id: tr.dataset.projectId, name: tr.cells[0].textContent, status: tr.dataset.status,
	badge: tr.cells[2].textContent, event: tr.dataset.event, error: tr.cells[3].textContent,
	eventId: tr.dataset.eventId, updated: tr.cells[4].textContent,
	elements: tr.cells[0].querySelectorAll('*').length + tr.cells[3].querySelectorAll('*').length,
}))`

func TestDashboardInBrowser(t *testing.T) {
	httpapitest.ChromiumPath(t) // skip before building anything
	out := testOutputDir(t)

	g := newRestartableGateway(t, httpapi.Config{Retry: 200 * time.Millisecond, Heartbeat: time.Second})
	t0 := time.Now().UTC().Truncate(time.Second)
	mk := func(id, name string) domain.Project {
		return domain.Project{ID: id, Name: name, CodeRepo: "https://github.com/example/" + name,
			DocsRepo: "https://github.com/example/" + name + "_docs", InsertedAt: t0, UpdatedAt: t0}
	}
	shop, ledger, chat := mk("p-shop", "phoenix_shop"), mk("p-ledger", "ledger_api"), mk("p-chat", "chat_live")
	g.broadcast(t, shop, domain.StatusReady, "")
	g.broadcast(t, ledger, domain.StatusCompiling, "")
	g.broadcast(t, chat, domain.StatusFailed, "Mix deps.get failed")
	settleHub(t, g.bus, "p-chat", domain.StatusFailed)

	ctx := httpapitest.StartBrowser(t, chromedp.WindowSize(1100, 640))

	run := func(steps ...chromedp.Action[chromedp.Void]) { t.Helper(); httpapitest.Do(ctx, t, steps...) }
	waitUntil := func(what, expr string) { t.Helper(); httpapitest.WaitUntil(ctx, t, what, expr) }
	rows := func() map[string]row {
		t.Helper()
		list, err := chromedp.Run(ctx, chromedp.Evaluate[[]row](readRows))
		require.NoError(t, err)
		m := make(map[string]row, len(list))
		for _, r := range list {
			m[r.ID] = r
		}
		return m
	}
	count := func() int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`+document.getElementById('event-count').dataset.count`))
		require.NoError(t, err)
		return n
	}
	screenshot := func(name string) {
		t.Helper()
		waitUntil("row highlights have faded", `document.getAnimations().length === 0`)
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		path := filepath.Join(out, name)
		require.NoError(t, os.WriteFile(path, png, 0o644))
		t.Logf("screenshot: %s", path)
	}
	state := `document.getElementById('connection').dataset.state`

	// The snapshot fills the table.
	run(chromedp.Navigate(g.url("/")))
	waitUntil("live with three rows", state+` === 'live' && document.querySelectorAll('#rows tr[data-project-id]').length === 3`)
	r := rows()
	assert.Equal(t, "ready", r["p-shop"].Status)
	assert.Equal(t, "phoenix_shop", r["p-shop"].Name)
	assert.Equal(t, "compiling", r["p-ledger"].Badge)
	assert.Equal(t, "project_error", r["p-chat"].Event)
	assert.Equal(t, "Mix deps.get failed", r["p-chat"].Error)
	assert.Equal(t, "", r["p-shop"].Error)
	assert.NotEmpty(t, r["p-shop"].EventID)
	assert.NotEmpty(t, r["p-shop"].Updated)
	order, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#rows tr[data-project-id]')).map(tr => tr.cells[0].textContent)`))
	require.NoError(t, err)
	assert.Equal(t, []string{"chat_live", "ledger_api", "phoenix_shop"}, order, "rows sorted by name")

	// Live updates change the rows; a project_updated clears the error.
	g.broadcast(t, ledger, domain.StatusGeneratingDocs, "")
	g.broadcast(t, chat, domain.StatusCloning, "")
	waitUntil("live updates shown", `document.querySelector('tr[data-project-id="p-chat"]').dataset.status === 'cloning'`)
	r = rows()
	assert.Equal(t, "generating docs", r["p-ledger"].Badge)
	assert.Equal(t, "", r["p-chat"].Error, "the error belongs to the project_error event only")
	assert.Equal(t, 5, count())

	// Text from events is text, never markup.
	evil := mk("p-evil", `<img src=x onerror="document.body.dataset.pwned=1">bad<b>name</b>`)
	g.broadcast(t, evil, domain.StatusFailed, `<script>document.body.dataset.pwned=1</script>`)
	waitUntil("the hostile project shown", `!!document.querySelector('tr[data-project-id="p-evil"]')`)
	r = rows()
	assert.Equal(t, evil.Name, r["p-evil"].Name)
	assert.Equal(t, `<script>document.body.dataset.pwned=1</script>`, r["p-evil"].Error)
	assert.Equal(t, 1, r["p-evil"].HTML, "only the name's own link element; no element from the data")
	pwned, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.body.dataset.pwned === '1'`))
	require.NoError(t, err)
	assert.False(t, pwned)
	before := count()

	// Outage 1: the server goes away (streams end, connections refused)
	// while events keep being broadcast; it comes back on the same port.
	g.stop()
	waitUntil("the page shows it is reconnecting", state+` !== 'live'`)
	missed := 0
	for i, st := range []domain.Status{domain.StatusCloning, domain.StatusFetchingDeps, domain.StatusCompiling} {
		g.broadcast(t, shop, st, "")
		g.broadcast(t, ledger, domain.StatusReady, "")
		missed += 2
		if i == 2 {
			g.broadcast(t, evil, domain.StatusPending, "")
			missed++
		}
	}
	settleHub(t, g.bus, "p-evil", domain.StatusPending)
	screenshot("dashboard-reconnecting.png")
	g.start(g.addr)
	waitUntil("live again with the missed events", state+` === 'live' && +document.getElementById('event-count').dataset.count >= `+fmt.Sprint(before+missed))
	assert.Equal(t, before+missed, count(), "exactly the missed events were replayed: no gap, no snapshot, no repeat")
	r = rows()
	assert.Equal(t, "compiling", r["p-shop"].Status)
	assert.Equal(t, "pending", r["p-evil"].Status)
	assert.Equal(t, "", r["p-evil"].Error)

	// Outage 2: the server refuses streams (503, as when shutting down or
	// full): EventSource gives up, the page shows the connection lost and
	// retries by hand from its last event id.
	before = count()
	refusing := g.front.api.Load()
	refusing.CloseStreams()
	waitUntil("the page shows the connection lost", state+` === 'lost'`)
	screenshot("dashboard-connection-lost.png")
	g.broadcast(t, shop, domain.StatusGeneratingDocs, "")
	g.broadcast(t, shop, domain.StatusReady, "")
	g.broadcast(t, chat, domain.StatusFailed, "mix compile failed: undefined function foo/0 (lib/app.ex:42)")
	settleHub(t, g.bus, "p-chat", domain.StatusFailed)
	g.front.api.Store(httpapi.New(g.cfg, g.bus, nil))
	waitUntil("live again after the refusal", state+` === 'live' && +document.getElementById('event-count').dataset.count >= `+fmt.Sprint(before+3))
	assert.Equal(t, before+3, count(), "the manual reconnection resumed from the last id too")
	r = rows()
	assert.Equal(t, "ready", r["p-shop"].Status)
	assert.Equal(t, "mix compile failed: undefined function foo/0 (lib/app.ex:42)", r["p-chat"].Error)
	g.broadcast(t, ledger, domain.StatusPending, "")
	waitUntil("live after recovery", `document.querySelector('tr[data-project-id="p-ledger"]').dataset.status === 'pending'`)
	screenshot("dashboard.png")

	// The deep link follows one project.
	run(chromedp.Navigate(g.url("/?project=p-chat")))
	waitUntil("the deep link is live with its project", state+` === 'live' && document.querySelectorAll('#rows tr[data-project-id]').length === 1`)
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('title').textContent`))
	require.NoError(t, err)
	assert.Equal(t, "Project p-chat", title)
	g.broadcast(t, shop, domain.StatusPending, "") // another project: not shown
	g.broadcast(t, chat, domain.StatusCloning, "")
	waitUntil("the followed project moves", `document.querySelector('tr[data-project-id="p-chat"]').dataset.status === 'cloning'`)
	assert.Len(t, rows(), 1)
	screenshot("dashboard-one-project.png")

	// A deep link to a project nobody has broadcast about yet waits for it.
	run(chromedp.Navigate(g.url("/?project=p-new")))
	waitUntil("live and empty", state+` === 'live' && !!document.getElementById('empty')`)
	g.broadcast(t, mk("p-new", "new_service"), domain.StatusPending, "")
	waitUntil("the new project appears", `!!document.querySelector('tr[data-project-id="p-new"]')`)

	run(chromedp.Navigate("about:blank"))
	require.NoError(t, chromedp.Cancel(ctx))
}

// settleHub waits until the latest event of project id has status st.
func settleHub(t *testing.T, bus *pubsub.Bus, id string, st domain.Status) {
	t.Helper()
	require.Eventually(t, func() bool {
		e, ok := bus.Latest(id)
		return ok && e.Event().Project.Status == st
	}, waitFor, time.Millisecond)
}
