package main

// statusd over TLS and HTTP/2 on loopback: ALPN, h2c, many streams on one
// connection, a stalled stream among live ones, shutdown with GOAWAY,
// certificate rotation, and the JSON log format.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// testCert is a self-signed certificate for 127.0.0.1 and localhost.
type testCert struct {
	certPEM, keyPEM []byte
	serial          *big.Int
	pool            *x509.CertPool
}

func newTestCert(t *testing.T, serial int64) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("statusd test %d", serial)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		serial:  big.NewInt(serial),
		pool:    pool,
	}
}

// install writes the pair to certFile and keyFile, each replaced at once
// (written aside, then renamed), as rotation tools do.
func (c testCert) install(t *testing.T, certFile, keyFile string) {
	t.Helper()
	for name, data := range map[string][]byte{certFile: c.certPEM, keyFile: c.keyPEM} {
		require.NoError(t, os.WriteFile(name+".tmp", data, 0o600))
		require.NoError(t, os.Rename(name+".tmp", name))
	}
}

// runStatusd runs the service in-process with args on a free loopback
// port. stop cancels it and checks that it stopped cleanly (it is also
// called at the end of the test); it returns how long that took.
type runningStatusd struct {
	url  string
	logs *syncBuffer
	stop func() time.Duration
}

func runStatusd(t *testing.T, args ...string) runningStatusd {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"--addr", "127.0.0.1:0"}, args...), env(nil), logs) }()
	var once sync.Once
	var took time.Duration
	stop := func() time.Duration {
		once.Do(func() {
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				took = time.Since(start)
				assert.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Errorf("statusd did not stop; logs:\n%s", logs.String())
			}
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return runningStatusd{url: waitForURL(t, logs.String), logs: logs, stop: stop}
}

// h2Client is an HTTP/2-only client that counts the TCP connections it
// opens: over TLS (ALPN h2) when pool is given, else h2c with prior
// knowledge.
type h2Client struct {
	*http.Client
	dials  atomic.Int32
	frames frameSniffer // what the server sent on the first connection (h2c only)
}

// frameSniffer parses the HTTP/2 frames a server sends in clear text (h2c)
// and records the GOAWAY frames' error codes.
type frameSniffer struct {
	mu     sync.Mutex
	buf    []byte
	goAway []uint32
}

func (f *frameSniffer) feed(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = append(f.buf, p...)
	for len(f.buf) >= 9 {
		n := int(f.buf[0])<<16 | int(f.buf[1])<<8 | int(f.buf[2])
		if len(f.buf) < 9+n {
			return
		}
		if f.buf[3] == 0x7 && n >= 8 { // GOAWAY: last stream id, error code
			p := f.buf[9:]
			f.goAway = append(f.goAway, uint32(p[4])<<24|uint32(p[5])<<16|uint32(p[6])<<8|uint32(p[7]))
		}
		f.buf = f.buf[9+n:]
	}
}

func (f *frameSniffer) goAways() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.goAway)
}

// sniffConn feeds what it reads to a frameSniffer.
type sniffConn struct {
	net.Conn
	f *frameSniffer
}

func (c sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.f.feed(p[:n])
	return n, err
}

func newH2Client(t *testing.T, pool *x509.CertPool, tune func(*http.HTTP2Config)) *h2Client {
	c := &h2Client{}
	var p http.Protocols
	if pool != nil {
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	h2 := &http.HTTP2Config{}
	if tune != nil {
		tune(h2)
	}
	d := &net.Dialer{}
	tr := &http.Transport{
		Protocols: &p,
		HTTP2:     h2,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			first := c.dials.Add(1) == 1
			conn, err := d.DialContext(ctx, network, addr)
			if err == nil && first && pool == nil {
				conn = sniffConn{conn, &c.frames}
			}
			return conn, err
		},
	}
	if pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	c.Client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// openStream GETs an SSE stream and checks the answer is a 200 stream.
func openStream(t *testing.T, c *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// readNames reads SSE frames from body and sends each event's project
// name, until the body ends; then it sends the error that ended it (nil
// for a clean end) on end.
func readNames(body io.Reader, names chan<- string, end chan<- error) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 128<<10), 128<<10)
	var bad error
	for sc.Scan() {
		line := sc.Text()
		if data, ok := strings.CutPrefix(line, "data: "); ok && bad == nil {
			var ev domain.Event
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				// A cut stream ends with a partial line: report why it
				// was cut, if it was.
				bad = fmt.Errorf("bad data line %.80q…: %w", line, err)
				continue
			}
			names <- ev.Project.Name
		}
	}
	if err := sc.Err(); err != nil {
		end <- err
		return
	}
	end <- bad
}

// postNamed POSTs a project_updated of project id whose name is name.
func postNamed(t *testing.T, base, id, name string) {
	t.Helper()
	postWith(t, http.DefaultClient, base, id, name)
}

// h1Client POSTs over HTTP/1.1 with TLS verification against pool.
func h1Client(pool *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// postWith is postNamed with client c.
func postWith(t *testing.T, c *http.Client, base, id, name string) {
	t.Helper()
	body, err := json.Marshal(domain.Event{Type: domain.EventProjectUpdated,
		Project: domain.Project{ID: id, Name: name, Status: domain.StatusCompiling}})
	require.NoError(t, err)
	resp, err := c.Post(base+"/events", "application/json", strings.NewReader(string(body)))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
}

func writeCertFiles(t *testing.T, c testCert) (certFile, keyFile string) {
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c.install(t, certFile, keyFile)
	return certFile, keyFile
}

func TestTLSAndHTTP2Flags(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, defaultHTTP2MaxStreams, c.net.maxStreams)
	assert.GreaterOrEqual(t, c.net.maxStreams, 250)
	assert.False(t, c.net.h2c, "h2c is opt-in")
	assert.Equal(t, "text", c.logFormat)

	c, err = parseConfig([]string{"--h2c", "--http2-max-streams", "500", "--log-format", "json"}, env(nil), io.Discard)
	require.NoError(t, err)
	assert.True(t, c.net.h2c)
	assert.Equal(t, 500, c.net.maxStreams)
	assert.Equal(t, "json", c.logFormat)

	c, err = parseConfig(nil, env(map[string]string{"STATUSD_TLS_CERT": "c.pem", "STATUSD_TLS_KEY": "k.pem"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "c.pem", c.net.tlsCert)

	for _, bad := range [][]string{
		{"--tls-cert", "c.pem"},
		{"--tls-key", "k.pem"},
		{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--h2c"},
		{"--http2-max-streams", "0"},
		{"--log-format", "xml"},
	} {
		_, err := parseConfig(bad, env(nil), io.Discard)
		assert.Error(t, err, "%q", bad)
	}

	// Files that are missing or do not hold a matching pair stop statusd
	// at start, with the reason.
	dir := t.TempDir()
	a, b := newTestCert(t, 1), newTestCert(t, 2)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.pem"), a.certPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.key"), b.keyPEM, 0o600))
	for _, files := range [][2]string{{"a.pem", "missing.key"}, {"a.pem", "b.key"}, {"b.key", "a.pem"}} {
		err := run(context.Background(), []string{"--addr", "127.0.0.1:0", "--tls-cert", filepath.Join(dir, files[0]),
			"--tls-key", filepath.Join(dir, files[1])}, env(nil), io.Discard)
		require.Error(t, err, "%v", files)
		assert.Contains(t, err.Error(), "TLS certificate")
	}
}

// With TLS, ALPN offers h2 and http/1.1: a browser-like client gets
// HTTP/2 (no Connection header), an HTTP/1.1-only client HTTP/1.1 (with
// Connection: close on a stream). Without --h2c the plain listener does
// not speak HTTP/2; with it, it speaks both.
func TestProtocolNegotiation(t *testing.T) {
	cert := newTestCert(t, 1)
	certFile, keyFile := writeCertFiles(t, cert)
	s := runStatusd(t, "--tls-cert", certFile, "--tls-key", keyFile)
	require.True(t, strings.HasPrefix(s.url, "https://127.0.0.1:"), s.url)

	h2 := newH2Client(t, cert.pool, nil)
	resp := openStream(t, h2.Client, s.url+"/events/projects")
	assert.Equal(t, 2, resp.ProtoMajor)
	assert.Empty(t, resp.Header.Values("Connection"), "HTTP/2 forbids connection-specific headers")
	require.NotNil(t, resp.TLS)
	assert.Equal(t, "h2", resp.TLS.NegotiatedProtocol)

	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.pool}}}
	defer h1.CloseIdleConnections()
	resp = openStream(t, h1, s.url+"/events/projects")
	assert.Equal(t, 1, resp.ProtoMajor)
	assert.True(t, resp.Close, "Connection: close (net/http moves it to resp.Close)")

	// Plain HTTP on the TLS port is refused with 400, not served.
	plain, err := http.Get("http" + strings.TrimPrefix(s.url, "https") + "/healthz")
	require.NoError(t, err)
	_ = plain.Body.Close()
	assert.Equal(t, http.StatusBadRequest, plain.StatusCode)

	// h2c: off by default, on with --h2c; HTTP/1.1 works on both.
	for _, h2c := range []bool{false, true} {
		args := []string{}
		if h2c {
			args = append(args, "--h2c")
		}
		p := runStatusd(t, args...)
		resp, err := http.Get(p.url + "/healthz")
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		_, err = newH2Client(t, nil, nil).Get(p.url + "/healthz")
		if !h2c {
			assert.Error(t, err, "no HTTP/2 with prior knowledge without --h2c")
			continue
		}
		require.NoError(t, err)
		resp = openStream(t, newH2Client(t, nil, nil).Client, p.url+"/events/projects")
		assert.Equal(t, 2, resp.ProtoMajor)
		assert.Empty(t, resp.Header.Values("Connection"))
	}
}

// 200 streams on one TCP connection, over h2c and over TLS: every stream
// receives every event, in order.
func TestTwoHundredStreamsOnOneConnection(t *testing.T) {
	const streams, events, projects = 200, 300, 5
	cert := newTestCert(t, 1)
	certFile, keyFile := writeCertFiles(t, cert)
	for _, mode := range []string{"h2c", "tls"} {
		t.Run(mode, func(t *testing.T) {
			var s runningStatusd
			var c *h2Client
			var poster *http.Client
			if mode == "tls" {
				s = runStatusd(t, "--tls-cert", certFile, "--tls-key", keyFile)
				c = newH2Client(t, cert.pool, nil)
				poster = h1Client(cert.pool)
			} else {
				s = runStatusd(t, "--h2c")
				c = newH2Client(t, nil, nil)
				poster = http.DefaultClient
			}
			names := make([]chan string, streams)
			ends := make(chan error, streams)
			for i := range names {
				resp := openStream(t, c.Client, s.url+"/events/projects?snapshot=false")
				require.Equal(t, 2, resp.ProtoMajor)
				names[i] = make(chan string, events)
				go readNames(resp.Body, names[i], ends)
			}
			assert.EqualValues(t, 1, c.dials.Load(), "all streams share one TCP connection")

			for n := range events {
				postWith(t, poster, s.url, fmt.Sprintf("p%d", n%projects), fmt.Sprintf("e%d", n))
			}
			deadline := time.After(60 * time.Second)
			for i, ch := range names {
				for n := range events {
					select {
					case got := <-ch:
						require.Equal(t, fmt.Sprintf("e%d", n), got, "stream %d: event missing, repeated or out of order", i)
					case err := <-ends:
						require.FailNow(t, "a stream ended early", "%v", err)
					case <-deadline:
						require.FailNow(t, "events missing", "stream %d has %d of %d", i, n, events)
					}
				}
			}
			assert.EqualValues(t, 1, c.dials.Load())
		})
	}
}

var debugTime = regexp.MustCompile(`time=(\S+) level=DEBUG msg="stream write failed; the client will resume"`)

// One HTTP/2 stream that its client does not read, among live streams on
// the same TCP connection.
//
// What flow control does: the server may send a stream at most the
// client's stream window (Go's client: 4 MiB; Chromium: 6 MiB) and all the
// connection's streams together at most the connection window (Go: 1 GiB;
// Chromium: 15 MiB). A stalled stream's unread data keeps its share of the
// connection window until the client consumes or discards it. With both
// clients the stream window is smaller than the connection window, so one
// stalled stream blocks only its own writes: its handler waits in Write,
// the others go on. The write deadline (--write-timeout) then resets the
// stalled stream (RST_STREAM), and its data's connection window comes back
// when the client discards it (Chromium, per its source, at the reset; Go's client when
// the application closes the body).
//
// The test: 10 live streams and 1 stalled one on one connection, more
// than a stream window of events; every live stream gets every event
// before the server gives up on the stalled one, the stalled one holds no
// more than its window and is then reset, and the connection still
// serves new streams and events.
func TestStalledHTTP2StreamDoesNotDelayItsSiblings(t *testing.T) {
	const live, events = 10, 600
	const writeTimeout = 15 * time.Second
	s := runStatusd(t, "--h2c", "--write-timeout", writeTimeout.String(), "--log-level", "DEBUG")
	c := newH2Client(t, nil, nil)

	stalled := openStream(t, c.Client, s.url+"/events/projects?snapshot=false")
	names := make([]chan string, live)
	ends := make(chan error, live)
	for i := range names {
		resp := openStream(t, c.Client, s.url+"/events/projects?snapshot=false")
		names[i] = make(chan string, events)
		go readNames(resp.Body, names[i], ends)
	}
	require.EqualValues(t, 1, c.dials.Load())

	// ~8 KiB per event: 600 of them are ~4.9 MiB, more than the 4 MiB
	// stream window.
	pad := strings.Repeat("x", 8<<10)
	for n := range events {
		postNamed(t, s.url, fmt.Sprintf("p%d", n%5), fmt.Sprintf("e%d-%s", n, pad))
	}
	for i, ch := range names {
		for n := range events {
			select {
			case got := <-ch:
				require.True(t, strings.HasPrefix(got, fmt.Sprintf("e%d-", n)), "stream %d: out of order at %d", i, n)
			case err := <-ends:
				require.FailNow(t, "a live stream ended", "%v", err)
			case <-time.After(60 * time.Second):
				require.FailNow(t, "events missing", "stream %d has %d of %d", i, n, events)
			}
		}
	}
	liveDone := time.Now()

	// The server gives up on the stalled stream one write timeout after
	// its window ran out, which was after the live streams had it all.
	var resetAt time.Time
	require.Eventually(t, func() bool {
		m := debugTime.FindStringSubmatch(s.logs.String())
		if m != nil {
			var err error
			resetAt, err = time.Parse(time.RFC3339Nano, m[1])
			require.NoError(t, err)
		}
		return m != nil
	}, 3*writeTimeout, 50*time.Millisecond, "the stalled stream was not ended")
	assert.True(t, liveDone.Before(resetAt), "the live streams got every event (%s) before the stalled one was reset (%s)",
		liveDone.Format(time.RFC3339Nano), resetAt.Format(time.RFC3339Nano))
	t.Logf("live streams complete %s before the stalled stream was reset", resetAt.Sub(liveDone).Round(time.Millisecond))

	// The stalled client reads what it was sent: less than every event
	// (no more than its window), then the reset.
	got := make(chan string, events)
	end := make(chan error, 1)
	readNames(stalled.Body, got, end)
	close(got)
	err := <-end
	require.Error(t, err, "the stalled stream is reset, not ended cleanly")
	assert.Contains(t, err.Error(), "INTERNAL_ERROR")
	assert.Less(t, len(got), events, "the stalled stream held no more than its window")
	t.Logf("stalled stream: %d of %d events buffered, then %v", len(got), events, err)
	require.NoError(t, stalled.Body.Close())

	// The connection is fine: a new stream on it gets a new event.
	resp := openStream(t, c.Client, s.url+"/events/projects?snapshot=false")
	fresh, freshEnd := make(chan string, 1), make(chan error, 1)
	go readNames(resp.Body, fresh, freshEnd)
	postNamed(t, s.url, "p0", "after")
	select {
	case name := <-fresh:
		assert.Equal(t, "after", name)
	case <-time.After(30 * time.Second):
		require.FailNow(t, "no event on a new stream after the reset")
	}
	for i, ch := range names {
		select {
		case name := <-ch:
			assert.Equal(t, "after", name, "live stream %d", i)
		case <-time.After(30 * time.Second):
			require.FailNow(t, "a live stream stopped", "stream %d", i)
		}
	}
	assert.EqualValues(t, 1, c.dials.Load(), "still one connection")
}

// SIGTERM (here: the run context ends) with streams open over HTTP/2: each
// stream ends cleanly (END_STREAM, io.EOF to the reader, not a reset), the
// connection gets GOAWAY (NO_ERROR; checked on the h2c connection, whose
// frames the test can read), and run returns within 5s.
func TestShutdownEndsHTTP2StreamsCleanly(t *testing.T) {
	const streams = 50
	cert := newTestCert(t, 1)
	certFile, keyFile := writeCertFiles(t, cert)
	for _, mode := range []string{"h2c", "tls"} {
		t.Run(mode, func(t *testing.T) {
			var s runningStatusd
			var c *h2Client
			if mode == "tls" {
				s = runStatusd(t, "--tls-cert", certFile, "--tls-key", keyFile)
				c = newH2Client(t, cert.pool, nil)
			} else {
				s = runStatusd(t, "--h2c")
				c = newH2Client(t, nil, nil)
			}
			ends := make(chan error, streams)
			names := make(chan string, streams)
			for range streams {
				resp := openStream(t, c.Client, s.url+"/events/projects?snapshot=false")
				go readNames(resp.Body, names, ends)
			}
			took := s.stop()
			assert.Less(t, took, 5*time.Second)
			if mode == "h2c" { // frames in clear text: the server said GOAWAY (NO_ERROR)
				assert.Equal(t, []uint32{0}, c.frames.goAways())
			}
			t.Logf("run returned %s after the shutdown began", took.Round(time.Millisecond))
			for range streams {
				select {
				case err := <-ends:
					assert.NoError(t, err, "a clean end of stream")
				case <-time.After(5 * time.Second):
					require.FailNow(t, "a stream did not end")
				}
			}
			assert.EqualValues(t, 1, c.dials.Load())
		})
	}
}

// Rotation: new certificate files are picked up without a restart; a new
// connection gets the new certificate while a stream opened before keeps
// receiving events on its connection with the old one. A pair that does
// not match (half-way through a rotation) keeps the current certificate.
func TestCertificateRotationKeepsStreams(t *testing.T) {
	a, b := newTestCert(t, 101), newTestCert(t, 102)
	certFile, keyFile := writeCertFiles(t, a)
	s := runStatusd(t, "--tls-cert", certFile, "--tls-key", keyFile)
	both := x509.NewCertPool()
	both.AppendCertsFromPEM(a.certPEM)
	both.AppendCertsFromPEM(b.certPEM)

	serial := func() *big.Int {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(s.url, "https://"), &tls.Config{RootCAs: both, NextProtos: []string{"h2"}})
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	require.Equal(t, a.serial, serial())

	old := newH2Client(t, both, nil)
	resp := openStream(t, old.Client, s.url+"/events/projects?snapshot=false")
	require.Equal(t, a.serial, resp.TLS.PeerCertificates[0].SerialNumber)
	names, ends := make(chan string, 10), make(chan error, 1)
	go readNames(resp.Body, names, ends)

	// Half a rotation: b's certificate with a's key does not load.
	require.NoError(t, os.WriteFile(certFile, b.certPEM, 0o600))
	require.Eventually(t, func() bool { return strings.Contains(s.logs.String(), "TLS certificate reload failed") },
		10*time.Second, 20*time.Millisecond)
	assert.Equal(t, a.serial, serial(), "the current certificate stays")

	b.install(t, certFile, keyFile)
	require.Eventually(t, func() bool { return serial().Cmp(b.serial) == 0 }, 10*time.Second, 50*time.Millisecond,
		"a new connection gets the new certificate")

	poster := h1Client(both)
	postWith(t, poster, s.url, "p1", "after-rotation")
	select {
	case name := <-names:
		assert.Equal(t, "after-rotation", name, "the old stream keeps flowing")
	case err := <-ends:
		require.FailNow(t, "the old stream ended", "%v", err)
	case <-time.After(30 * time.Second):
		require.FailNow(t, "the old stream got nothing")
	}
	assert.EqualValues(t, 1, old.dials.Load())
}

// --log-format json: every line is one JSON object with time, level, msg
// and the same attributes as the text format.
func TestJSONLogFormat(t *testing.T) {
	s := runStatusd(t, "--log-format", "json")
	s.stop()
	lines := strings.Split(strings.TrimSpace(s.logs.String()), "\n")
	require.NotEmpty(t, lines)
	var msgs []string
	for _, line := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "not JSON: %q", line)
		for _, k := range []string{"time", "level", "msg"} {
			assert.Contains(t, rec, k, "%q", line)
		}
		msgs = append(msgs, rec["msg"].(string))
		if strings.HasPrefix(rec["msg"].(string), "listening on ") {
			assert.Equal(t, "memory", rec["pubsub"])
			assert.Equal(t, false, rec["demo"])
		}
	}
	assert.Contains(t, msgs, "listening on "+s.url)
	assert.Contains(t, msgs, "stopped")
}

// The real binary reloads its certificate on SIGHUP (and does not die of
// it). The new pair is written in place with the old files' size and
// modification times, so only the signal can have triggered the reload.
func TestSIGHUPReloadsTheCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	a := newTestCert(t, 201)
	b := newTestCert(t, 202)
	for len(b.certPEM) != len(a.certPEM) || len(b.keyPEM) != len(a.keyPEM) {
		b = newTestCert(t, 202)
	}
	certFile, keyFile := writeCertFiles(t, a)

	s := httpapitest.StartStatusd(t, httpapitest.BuildStatusd(t), nil, "--tls-cert", certFile, "--tls-key", keyFile)
	url := s.URL
	both := x509.NewCertPool()
	both.AppendCertsFromPEM(a.certPEM)
	both.AppendCertsFromPEM(b.certPEM)
	serial := func() *big.Int {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{RootCAs: both})
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	require.Equal(t, a.serial, serial())

	for name, data := range map[string][]byte{certFile: b.certPEM, keyFile: b.keyPEM} {
		info, err := os.Stat(name)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(name, data, 0o600))
		require.NoError(t, os.Chtimes(name, info.ModTime(), info.ModTime()))
	}
	time.Sleep(3 * certPollInterval)
	require.Equal(t, a.serial, serial(), "the poll does not see an in-place change with the same size and time")

	s.Signal(syscall.SIGHUP)
	require.Eventually(t, func() bool { return serial().Cmp(b.serial) == 0 }, 10*time.Second, 50*time.Millisecond,
		"a new connection gets the new certificate")
	assert.Contains(t, s.Logs(), "SIGHUP: reloading the TLS certificate")

	require.NoError(t, s.Stop(syscall.SIGTERM, 5*time.Second), "exit code 0")
}

// Over HTTP/2, --max-clients counts streams (not connections) and idle
// streams get heartbeats.
func TestHTTP2StreamLimitAndHeartbeat(t *testing.T) {
	s := runStatusd(t, "--h2c", "--max-clients", "3", "--heartbeat", "100ms")
	c := newH2Client(t, nil, nil)
	bodies := make([]io.Reader, 3)
	for i := range bodies {
		bodies[i] = openStream(t, c.Client, s.url+"/events/projects?snapshot=false").Body
	}
	resp, err := c.Get(s.url + "/events/projects")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "the 4th stream on the same connection")
	assert.Equal(t, "5", resp.Header.Get("Retry-After"))
	assert.Contains(t, string(body), "too many open streams")
	assert.EqualValues(t, 1, c.dials.Load())

	sc := bufio.NewScanner(bodies[0])
	heartbeats := 0
	deadline := time.Now().Add(30 * time.Second)
	for heartbeats < 2 && time.Now().Before(deadline) && sc.Scan() {
		if sc.Text() == ": heartbeat" {
			heartbeats++
		}
	}
	assert.Equal(t, 2, heartbeats, "an idle HTTP/2 stream gets heartbeats")
}
