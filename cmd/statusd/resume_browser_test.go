package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// switchingProxy forwards TCP connections to its current target; switching
// the target cuts every connection open, as a load balancer that loses an
// instance does.
type switchingProxy struct {
	ln     net.Listener
	target atomic.Value // string, host:port
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newSwitchingProxy(t *testing.T, target string) *switchingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &switchingProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.target.Store(target)
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		p.cutAll()
		p.wg.Wait()
	})
	return p
}

func (p *switchingProxy) serve(c net.Conn) {
	up, err := net.Dial("tcp", p.target.Load().(string))
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var pipes sync.WaitGroup
	pipes.Go(func() { _, _ = io.Copy(up, c); _ = up.Close() })
	pipes.Go(func() { _, _ = io.Copy(c, up); _ = c.Close() })
	pipes.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *switchingProxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// switchTo sends new connections to target and cuts the open ones.
func (p *switchingProxy) switchTo(target string) {
	p.target.Store(target)
	p.cutAll()
}

// A real EventSource (headless Chromium) behind a proxy that switches it
// from gateway A to gateway B mid-stream, while events are posted: it
// reconnects by itself with Last-Event-ID, and ends with every event
// exactly once, in order per project.
func TestEventSourceSwitchedToAnotherGateway(t *testing.T) {
	httpapitest.ChromiumPath(t) // skip (or fail under CI) before starting anything
	a, b := twoGateways(t)
	proxy := newSwitchingProxy(t, strings.TrimPrefix(a, "http://"))
	page := "http://" + proxy.ln.Addr().String()

	ctx := httpapitest.StartBrowser(t)
	run := func(steps ...chromedp.Action[chromedp.Void]) { t.Helper(); httpapitest.Do(ctx, t, steps...) }
	waitUntil := func(what, expr string) { t.Helper(); httpapitest.WaitUntil(ctx, t, what, expr) }
	// A page of the proxy's origin, so the stream is same-origin.
	run(chromedp.Navigate(page + "/healthz"))
	_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		window.got = []; window.opens = 0;
		const es = new EventSource('/events/projects?snapshot=false');
		es.onopen = () => { window.opens++; };
		es.addEventListener('project_updated', (e) => { const ev = JSON.parse(e.data); window.got.push(ev.project.id + ' ' + ev.project.name); });
		window.es = es;
		return true;
	})()`))
	require.NoError(t, err)
	waitUntil("the stream is open", `window.opens === 1`)

	const projects = 4
	project := func(i, n int) domain.Project {
		return domain.Project{ID: fmt.Sprintf("browser-%d", i), Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling,
			UpdatedAt: time.Date(2024, 1, 1, 12, 0, 0, n, time.UTC)}
	}
	round := func(gateway string, n int) {
		for i := range projects {
			post(t, gateway, project(i, n))
		}
	}
	for n := 1; n <= 3; n++ {
		round(a, n)
	}
	waitUntil("the events from A arrived", fmt.Sprintf(`window.got.length === %d`, 3*projects))
	proxy.switchTo(strings.TrimPrefix(b, "http://")) // A is gone for this client
	for n := 4; n <= 6; n++ {
		round(b, n) // while the EventSource reconnects
	}
	waitUntil("the stream reopened on B", `window.opens >= 2`)
	waitUntil("every event arrived", fmt.Sprintf(`window.got.length >= %d`, 6*projects))
	time.Sleep(300 * time.Millisecond) // anything more would show now
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.got`))
	require.NoError(t, err)
	perProject := map[string][]string{}
	for _, line := range got {
		id, name, _ := strings.Cut(line, " ")
		perProject[id] = append(perProject[id], name)
	}
	want := []string{"app-1", "app-2", "app-3", "app-4", "app-5", "app-6"}
	for i := range projects {
		assert.Equal(t, want, perProject[fmt.Sprintf("browser-%d", i)], "browser-%d: every event exactly once, in order", i)
	}
	assert.Len(t, got, 6*projects, "no snapshot, no repeat")
}
