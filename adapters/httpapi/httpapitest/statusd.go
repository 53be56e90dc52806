package httpapitest

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// StartTimeout bounds how long StartStatusd waits for statusd to say where
// it listens (generous: the machine may be loaded, and statusd may first
// connect to a database or a broker).
const StartTimeout = 20 * time.Second

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// BuildStatusd builds cmd/statusd once per test process and returns the
// binary. It is built without the race detector whatever the test binary
// has (GOFLAGS is cleared): as deployed, so that its memory is what a
// user would measure. The binary lives in a temporary directory of its
// own for the whole process, so that every test of the package can share
// it (RemoveBuildAfter removes it at the end); skipped in -short mode.
func BuildStatusd(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs statusd")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "statusd-test")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "statusd")
		cmd := exec.Command("go", "build", "-o", built, "github.com/statusbroadcaster/statusbroadcaster/cmd/statusd")
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w: %s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return built
}

// M is what TestMain runs: *testing.M.
type M interface{ Run() int }

type removeBuild struct{ m M }

func (r removeBuild) Run() int {
	code := r.m.Run()
	if built != "" {
		_ = os.RemoveAll(filepath.Dir(built))
	}
	return code
}

// RemoveBuildAfter wraps m so that the binary BuildStatusd built is
// removed once the tests have run:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(httpapitest.RemoveBuildAfter(m)) }
func RemoveBuildAfter(m M) M { return removeBuild{m} }

// Statusd is statusd running as a child process.
type Statusd struct {
	// URL is where it listens: http://host:port, or https:// with TLS.
	URL string
	// Addr is URL's host:port.
	Addr string

	t       testing.TB
	cmd     *exec.Cmd
	logs    *Log
	done    chan struct{} // closed when the process has exited
	exitErr error         // what Wait returned, once done is closed
}

var listeningOn = regexp.MustCompile(`listening on (https?://[^ "]+)`)

// StartStatusd runs bin with args, and env added to the test's
// environment, and waits until it logs where it listens. Unless args or
// env say where (--addr, STATUSD_ADDR), it listens on a free loopback
// port. Its standard error is kept (Logs); at the end of the test the
// process is killed if still alive, and if the test failed the end of its
// log is logged.
func StartStatusd(t testing.TB, bin string, env []string, args ...string) *Statusd {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return a == "--addr" || strings.HasPrefix(a, "--addr=") }) &&
		!slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "STATUSD_ADDR=") }) {
		args = append([]string{"--addr", "127.0.0.1:0"}, args...)
	}
	p := &Statusd{t: t, logs: &Log{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.logs
	require.NoError(t, p.cmd.Start())
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			const tail = 16 << 10
			log := p.logs.String()
			t.Logf("statusd log (its last %d KiB at most):\n%s", tail>>10, log[max(0, len(log)-tail):])
		}
	})
	p.URL = WaitListening(t, p.logs.String)
	p.Addr = strings.TrimPrefix(strings.TrimPrefix(p.URL, "http://"), "https://")
	return p
}

// WaitListening waits, up to StartTimeout, for statusd's "listening on"
// log line in what logs returns, and returns the URL it names
// (http://host:port, or https:// with TLS). It serves statusd run as a
// child process and run in the test process alike.
func WaitListening(t testing.TB, logs func() string) string {
	t.Helper()
	var url string
	ok := assert.Eventually(t, func() bool {
		m := listeningOn.FindStringSubmatch(logs())
		if m != nil {
			url = m[1]
		}
		return m != nil
	}, StartTimeout, 5*time.Millisecond, "statusd did not say where it listens")
	if !ok {
		require.FailNow(t, "no 'listening on' line in its log", "log:\n%s", logs())
	}
	return url
}

// Logs returns what statusd has written to its standard error so far.
func (p *Statusd) Logs() string { return p.logs.String() }

// Pid is the process id.
func (p *Statusd) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Statusd) Signal(sig os.Signal) {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(sig))
}

// Stop sends sig (SIGTERM, os.Interrupt) and waits for the process to
// exit, as WaitExit does.
func (p *Statusd) Stop(sig os.Signal, d time.Duration) error {
	p.t.Helper()
	p.Signal(sig)
	return p.WaitExit(d)
}

// WaitExit waits for the process to exit, failing the test now unless it
// exits within d. It returns how the process exited: nil for exit status 0.
func (p *Statusd) WaitExit(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitErr
	case <-time.After(d):
		require.FailNow(p.t, fmt.Sprintf("statusd did not exit within %s", d))
		return nil
	}
}

// Kill ends the process with SIGKILL, so that none of its shutdown code
// runs, and waits for it; it does nothing if the process has exited.
func (p *Statusd) Kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Memory returns the process's resident set size and its peak (VmRSS and
// VmHWM of /proc/<pid>/status), in bytes.
func (p *Statusd) Memory() (rss, peak int64) {
	p.t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	require.NoError(p.t, err)
	field := func(name string) int64 {
		for line := range strings.Lines(string(status)) {
			if v, ok := strings.CutPrefix(line, name+":"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				require.NoError(p.t, err)
				return kb << 10
			}
		}
		require.Fail(p.t, "no "+name+" in /proc/pid/status")
		return 0
	}
	return field("VmRSS"), field("VmHWM")
}

// Metric returns the value of an unlabelled metric from GET /metrics over
// plain HTTP (for instance go_goroutines), failing the test if it is absent.
func (p *Statusd) Metric(name string) float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + p.Addr + "/metrics")
	require.NoError(p.t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(p.t, err)
			return f
		}
	}
	require.Fail(p.t, "no metric "+name)
	return 0
}

// Log is a log sink that a process (or a service in the test process)
// writes to while the test reads it.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
