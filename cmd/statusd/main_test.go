package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(removeBinaryAfter{m},
		// Sarama (kafka mode): its metrics library's process-wide ticker,
		// and a closed producer's circuit-breaker timer (sleeps at most
		// 10s, then ends; time.Sleep is its top frame).
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		goleak.IgnoreAnyFunction("github.com/eapache/go-resiliency/breaker.(*Breaker).timer"),
	)
}

// removeBinaryAfter runs the tests, then removes the statusd binary they
// share (built once, by binary), whichever test built it.
type removeBinaryAfter struct{ m *testing.M }

func (r removeBinaryAfter) Run() int {
	code := r.m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	return code
}

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestConfigFromFlagsAndEnvironment(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, ":8080", c.addr)
	assert.Equal(t, "memory", c.pubsub)
	assert.False(t, c.demo)
	assert.Equal(t, 15*time.Second, c.heartbeat)
	assert.Equal(t, 10_000, c.history)

	c, err = parseConfig(nil, env(map[string]string{
		"STATUSD_ADDR": ":9999", "STATUSD_DEMO": "true", "STATUSD_HEARTBEAT": "1s",
		"STATUSD_MAX_CLIENTS": "7", "STATUSD_LOG_LEVEL": "debug",
	}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, ":9999", c.addr)
	assert.True(t, c.demo)
	assert.Equal(t, time.Second, c.heartbeat)
	assert.Equal(t, 7, c.maxClients)

	c, err = parseConfig([]string{"--addr", ":1234", "--heartbeat=2s"}, env(map[string]string{"STATUSD_ADDR": ":9999"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, ":1234", c.addr, "a flag wins over the environment")
	assert.Equal(t, 2*time.Second, c.heartbeat)

	for _, bad := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--pubsub", "redis"}, nil},
		{[]string{"--heartbeat", "soon"}, nil},
		{[]string{"--heartbeat", "0s"}, nil},
		{[]string{"--history", "0"}, nil},
		{[]string{"extra"}, nil},
		{nil, map[string]string{"STATUSD_HISTORY": "many"}},
	} {
		_, err := parseConfig(bad.args, env(bad.env), io.Discard)
		assert.Error(t, err, "%v %v", bad.args, bad.env)
	}
}

// syncBuffer is a log sink the service and the test share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var listening = regexp.MustCompile(`listening on (http://[^ "]+)`)

// waitForURL returns the URL of the "listening on" log line.
func waitForURL(t *testing.T, logs func() string) string {
	t.Helper()
	var url string
	require.Eventually(t, func() bool {
		m := listening.FindStringSubmatch(logs())
		if m != nil {
			url = m[1]
		}
		return m != nil
	}, 10*time.Second, 5*time.Millisecond, "no 'listening on' line in:\n%s", logs())
	return url
}

// The service in-process: port 0 picks a free port, the log says where,
// the demo streams live events, and cancelling stops it cleanly.
func TestRunServesTheDemoAndStopsCleanly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--demo"}, env(nil), logs) }()
	url := waitForURL(t, logs.String)
	assert.Regexp(t, `^http://127\.0\.0\.1:\d+$`, url)

	// Ready once the router runs, a moment after it listens.
	require.Eventually(t, func() bool { return status(t, url+"/readyz") == http.StatusOK }, 10*time.Second, 5*time.Millisecond)

	resp, err := http.Get(url + "/events/projects")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	events := 0
	for events < 3 && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "event: project_") {
			events++
		}
	}
	assert.Equal(t, 3, events, "the demo broadcasts live updates")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "run did not stop within 5s")
	}
	for sc.Scan() {
	}
	assert.Contains(t, logs.String(), "stopped")
}

func TestListenAddressInUseIsAnError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--addr", "127.0.0.1:0"}, env(nil), logs) }()
	url := waitForURL(t, logs.String)
	err := run(context.Background(), []string{"--addr", strings.TrimPrefix(url, "http://")}, env(nil), io.Discard)
	assert.Error(t, err)
	cancel()
	require.NoError(t, <-done)
}

// The real binary: SIGTERM ends open streams and the process exits 0
// within 5 seconds.
func TestSIGTERMShutsDownCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "statusd")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())

	cmd := exec.Command(bin, "--demo")
	cmd.Env = append(os.Environ(), "STATUSD_ADDR=127.0.0.1:0")
	logs := &syncBuffer{}
	cmd.Stderr = logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	url := waitForURL(t, logs.String)

	resp, err := http.Get(url + "/events/projects")
	require.NoError(t, err)
	defer resp.Body.Close()
	streamEnded := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		streamEnded <- err
	}()

	start := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "exit code 0; logs:\n%s", logs.String())
		t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		require.FailNow(t, "statusd did not exit within 5s of SIGTERM", logs.String())
	}
	select {
	case err := <-streamEnded:
		assert.NoError(t, err, "the stream ended cleanly, not reset")
	case <-time.After(time.Second):
		require.FailNow(t, "the open stream did not end")
	}
}
