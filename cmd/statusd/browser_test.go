package main

// Why HTTP/2 matters to a dashboard, in a real browser: Chromium allows 6
// HTTP/1.1 connections per origin, shared by all tabs, and every open
// dashboard holds one with its EventSource; over HTTP/2 all tabs share one
// connection, up to --http2-max-streams streams.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
)

// startBrowser starts headless Chromium, which accepts the test's
// self-signed certificate, and returns its first tab.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	return httpapitest.StartBrowser(t, chromedp.Flag("ignore-certificate-errors", true))
}

// tab is one browser tab showing the dashboard.
type tab struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newTab(t *testing.T, browser context.Context) tab {
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	return tab{ctx, cancel}
}

// navigate starts loading u without waiting for the page to load.
func (tb tab) navigate(t *testing.T, u string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		done <- chromedp.Do(tb.ctx, chromedp.Func(func(ctx context.Context, target *chromedp.Target) error {
			_, err := cdp.Call(ctx, target, page.Navigate, page.NavigateParams{URL: u})
			return err
		}))
	}()
	// Page.navigate answers once the response starts; a request that
	// waits for a connection does not answer, which is fine here.
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(2 * time.Second):
	}
}

// is reports whether expr is true in the tab within d.
func (tb tab) is(expr string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(tb.ctx, d)
	defer cancel()
	ok, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond)))
	return err == nil && ok
}

func (tb tab) eval(t *testing.T, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	require.NoError(t, err)
	return s
}

const (
	live     = `document.getElementById('connection')?.dataset.state === 'live'`
	protocol = `performance.getEntriesByType('navigation')[0].nextHopProtocol`
)

func hasRow(id string) string {
	return fmt.Sprintf(`!!document.querySelector('#rows tr[data-project-id=%q]')`, id)
}

// Over TLS, Chromium negotiates HTTP/2 and ten dashboard tabs are all
// live on one connection: an event reaches every one of them.
func TestTenDashboardTabsOverHTTP2(t *testing.T) {
	cert := newTestCert(t, 1)
	certFile, keyFile := writeCertFiles(t, cert)
	s := runStatusd(t, "--tls-cert", certFile, "--tls-key", keyFile)
	browser := startBrowser(t)

	tabs := make([]tab, 10)
	for i := range tabs {
		tabs[i] = newTab(t, browser)
		tabs[i].navigate(t, s.url+"/")
	}
	for i, tb := range tabs {
		require.True(t, tb.is(live, 30*time.Second), "tab %d is not live", i+1)
		assert.Equal(t, "h2", tb.eval(t, protocol), "tab %d", i+1)
	}
	postWith(t, h1Client(cert.pool), s.url, "ten-tabs", "ten_tabs")
	for i, tb := range tabs {
		assert.True(t, tb.is(hasRow("ten-tabs"), 30*time.Second), "tab %d did not show the event", i+1)
	}
}

// Over HTTP/1.1 (the plain listener: browsers never speak h2c) the same
// browser gets 6 live tabs; the 7th does not even load, because all 6
// connections Chromium allows per origin hold a stream. When one tab
// closes, the 7th loads and goes live.
func TestSeventhDashboardTabHangsOverHTTP1(t *testing.T) {
	s := runStatusd(t)
	browser := startBrowser(t)

	tabs := make([]tab, 7)
	for i := range 6 {
		tabs[i] = newTab(t, browser)
		tabs[i].navigate(t, s.url+"/")
		require.True(t, tabs[i].is(live, 30*time.Second), "tab %d is not live", i+1)
		assert.Equal(t, "http/1.1", tabs[i].eval(t, protocol))
	}
	tabs[6] = newTab(t, browser)
	tabs[6].navigate(t, s.url+"/")
	assert.False(t, tabs[6].is(live, 5*time.Second), "the 7th tab hangs over HTTP/1.1")
	postWith(t, h1Client(nil), s.url, "seven-tabs", "seven_tabs")
	assert.False(t, tabs[6].is(hasRow("seven-tabs"), 2*time.Second), "the 7th tab gets no events")
	for i := range 6 {
		assert.True(t, tabs[i].is(hasRow("seven-tabs"), 30*time.Second), "tab %d did not show the event", i+1)
	}

	require.NoError(t, chromedp.Cancel(tabs[0].ctx)) // close a tab: its connection frees up
	assert.True(t, tabs[6].is(live, 30*time.Second), "the 7th tab loads once a connection is free")
	assert.True(t, tabs[6].is(hasRow("seven-tabs"), 30*time.Second), "and shows the snapshot")
}
