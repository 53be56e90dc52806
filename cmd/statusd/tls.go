package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// defaultHTTP2MaxStreams is the default of --http2-max-streams: how many
// streams one HTTP/2 connection may have open at once. A browser shares one
// connection per origin among all its tabs, so this is how many dashboard
// tabs (or EventSources) one browser can keep open.
const defaultHTTP2MaxStreams = 250

// certPollInterval is how often the certificate files are checked for a
// change (besides SIGHUP).
const certPollInterval = time.Second

// netFlags is the listener part of the configuration: TLS, HTTP/2 and h2c.
type netFlags struct {
	tlsCert    string
	tlsKey     string
	h2c        bool
	maxStreams int
}

func (n *netFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.tlsCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS with HTTP/2 and HTTP/1.1 (needs --tls-key); reloaded on SIGHUP and when the file changes")
	fs.StringVar(&n.tlsKey, "tls-key", "", "PEM private key file of --tls-cert; reloaded with it")
	fs.BoolVar(&n.h2c, "h2c", false, "also speak HTTP/2 with prior knowledge (h2c) on the plain-text listener, for proxies that talk h2c upstream")
	fs.IntVar(&n.maxStreams, "http2-max-streams", defaultHTTP2MaxStreams, "most concurrent streams per HTTP/2 connection")
}

func (n *netFlags) validate() error {
	switch {
	case (n.tlsCert == "") != (n.tlsKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case n.tlsCert != "" && n.h2c:
		return errors.New("--h2c is for the plain-text listener; with --tls-cert HTTP/2 is negotiated by ALPN")
	case n.maxStreams <= 0:
		return errors.New("--http2-max-streams must be positive")
	}
	return nil
}

// listener is what configure prepared: how to serve, the URL scheme, and
// how to stop the certificate reloader.
type listener struct {
	scheme string
	serve  func(srv *http.Server, ln net.Listener) error
	stop   func()
}

// configure sets srv's protocols (HTTP/1.1; HTTP/2 over TLS; h2c if asked
// for) and HTTP/2 limits, and with TLS loads the certificate and starts
// the reloader (SIGHUP and a poll of the files), which stop() ends.
func (n *netFlags) configure(srv *http.Server, logger *slog.Logger) (listener, error) {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: n.maxStreams}
	if n.tlsCert == "" {
		protocols.SetUnencryptedHTTP2(n.h2c)
		srv.Protocols = &protocols
		return listener{
			scheme: "http",
			serve:  func(srv *http.Server, ln net.Listener) error { return srv.Serve(ln) },
			stop:   func() {},
		}, nil
	}
	protocols.SetHTTP2(true)
	srv.Protocols = &protocols
	r := &certReloader{certFile: n.tlsCert, keyFile: n.tlsKey, log: logger}
	if err := r.reload(); err != nil {
		return listener{}, err
	}
	// ServeTLS adds "h2" and "http/1.1" to NextProtos (ALPN) from
	// srv.Protocols; GetCertificate hands every new handshake the
	// current certificate, so a rotation affects new connections only and
	// streams already open keep flowing.
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.watch(ctx, certPollInterval) })
	return listener{
		scheme: "https",
		serve:  func(srv *http.Server, ln net.Listener) error { return srv.ServeTLS(ln, "", "") },
		stop:   func() { cancel(); wg.Wait() },
	}, nil
}

// certReloader holds the current certificate and replaces it when asked
// (SIGHUP) or when its files change. A pair that does not load — say the
// certificate was written and the key not yet — leaves the current one in
// place and is logged; the next change is tried again.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cert  atomic.Pointer[tls.Certificate]
	state [2]fileState // of certFile and keyFile when last loaded or tried
}

// fileState is what tells that a file changed.
type fileState struct {
	info os.FileInfo
}

func (f fileState) same(info os.FileInfo) bool {
	return f.info != nil && info != nil && os.SameFile(f.info, info) &&
		f.info.ModTime().Equal(info.ModTime()) && f.info.Size() == info.Size()
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// reload loads the pair and makes it current.
func (r *certReloader) reload() error {
	for i, name := range []string{r.certFile, r.keyFile} {
		info, _ := os.Stat(name)
		r.state[i] = fileState{info: info}
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
	}
	if old := r.cert.Load(); old != nil && bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		return nil // touched, not changed
	}
	r.cert.Store(&cert)
	r.log.Info("TLS certificate loaded", "file", r.certFile, "subject", leaf.Subject.String(),
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// changed reports whether either file differs from when it was last
// loaded or tried.
func (r *certReloader) changed() bool {
	for i, name := range []string{r.certFile, r.keyFile} {
		info, err := os.Stat(name)
		if err != nil || !r.state[i].same(info) {
			return err == nil || r.state[i].info != nil
		}
	}
	return false
}

// watch reloads on SIGHUP and when the files change, until ctx ends.
func (r *certReloader) watch(ctx context.Context, every time.Duration) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.log.Info("SIGHUP: reloading the TLS certificate")
		case <-tick.C:
			if !r.changed() {
				continue
			}
		}
		if err := r.reload(); err != nil {
			r.log.Warn("TLS certificate reload failed; keeping the current certificate", "error", err)
		}
	}
}

// listenIf listens on addr unless err (from configure) already failed.
func listenIf(err error, addr string) (net.Listener, error) {
	if err != nil {
		return nil, err
	}
	return net.Listen("tcp", addr)
}
