package httpapitest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// ChromiumPath finds the browser: $CHROMIUM, else chromium,
// chromium-browser or google-chrome on the PATH. Without one the test is
// skipped, loudly, unless CI=true, which makes it mandatory.
func ChromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found, and CI=true makes the browser test mandatory: apt-get install chromium (or set CHROMIUM=/path/to/chrome)")
	}
	msg := "SKIPPING THE BROWSER TEST " + t.Name() + ": chromium not found (apt-get install chromium, or set CHROMIUM); with CI=true this fails instead"
	fmt.Fprintln(os.Stderr, "!!!!!!!! "+msg)
	t.Skip(msg)
	return ""
}

// StartBrowser starts headless Chromium with an empty profile and returns
// its first tab, ready (the browser has started); more tabs are
// chromedp.NewContext of it. extra adds allocator options, e.g.
// chromedp.WindowSize or chromedp.Flag("ignore-certificate-errors", true).
// The browser is closed at the end of the test, unless the test closed it
// (chromedp.Cancel of the returned context).
func StartBrowser(t testing.TB, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(ChromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	}, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		if ctx.Err() == nil { // the test may have closed it (chromedp.Cancel) already
			_ = chromedp.Cancel(ctx) // closes the browser, and waits for it
		}
		cancel()
	})
	require.NoError(t, chromedp.Do(ctx), "starting chromium") // first Run: no timeout on this context
	return ctx
}

// stepTimeout bounds a step of a browser test: Do's actions, WaitUntil's
// wait.
const stepTimeout = 30 * time.Second

// Do runs steps in ctx's tab, failing the test unless they succeed within
// 30 seconds.
func Do(ctx context.Context, t testing.TB, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	require.NoError(t, chromedp.Do(c, steps...))
}

// WaitUntil polls the JavaScript expression expr in ctx's tab until it is
// true, failing the test (saying what was awaited) after 30 seconds.
func WaitUntil(ctx context.Context, t testing.TB, what, expr string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	_, err := chromedp.Run(c, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(20*time.Millisecond)))
	require.NoError(t, err, "waiting until %s (%s)", what, expr)
}
