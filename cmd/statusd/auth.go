package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/jwtauth"
)

// authFlags is the authorization part of the configuration. With none of
// the key flags set statusd runs open.
type authFlags struct {
	secret    string
	publicKey string
	jwksURL   string
	issuer    string
	audience  string
}

func (a *authFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.secret, "jwt-secret", "", fmt.Sprintf("HS256 secret (at least %d bytes) that verifies tokens; prefer the STATUSD_JWT_SECRET variable", jwtauth.MinSecretBytes))
	fs.StringVar(&a.publicKey, "jwt-public-key", "", "PEM file of the public key that verifies tokens: RSA → RS256, ECDSA → ES256/384/512, Ed25519 → EdDSA")
	fs.StringVar(&a.jwksURL, "jwt-jwks-url", "", "JWKS endpoint whose keys verify tokens; refreshed every 15m and on an unknown kid")
	fs.StringVar(&a.issuer, "jwt-issuer", "", "when set, a token's iss must equal it")
	fs.StringVar(&a.audience, "jwt-audience", "", "when set, a token's aud must hold it")
}

// enabled reports whether any key is configured.
func (a *authFlags) enabled() bool {
	return a.secret != "" || a.publicKey != "" || a.jwksURL != ""
}

// config returns the jwtauth.Config the flags describe, reading the
// public key file. Errors are for statusd's user: which flag is wrong.
func (a *authFlags) config() (jwtauth.Config, error) {
	c := jwtauth.Config{JWKSURL: a.jwksURL, Issuer: a.issuer, Audience: a.audience}
	if a.secret != "" {
		if len(a.secret) < jwtauth.MinSecretBytes {
			return c, fmt.Errorf("--jwt-secret is %d bytes; it must be at least %d (e.g. openssl rand -base64 48)", len(a.secret), jwtauth.MinSecretBytes)
		}
		c.Secret = []byte(a.secret)
	}
	if a.publicKey != "" {
		pem, err := os.ReadFile(a.publicKey)
		if err != nil {
			return c, fmt.Errorf("--jwt-public-key: %w", err)
		}
		if _, _, err := jwtauth.ParsePublicKey(pem); err != nil {
			return c, fmt.Errorf("--jwt-public-key %s: %w", a.publicKey, err)
		}
		c.PublicKeyPEM = pem
	}
	if !a.enabled() && (a.issuer != "" || a.audience != "") {
		return c, errors.New("--jwt-issuer and --jwt-audience need a key: --jwt-secret, --jwt-public-key or --jwt-jwks-url")
	}
	return c, nil
}

// verifier returns the Verifier of the configuration, or nil (open mode),
// which it announces with one WARN.
func (a *authFlags) verifier(logger *slog.Logger) (*jwtauth.Verifier, error) {
	if !a.enabled() {
		logger.Warn("authorization is off: anyone who can reach statusd may read every project and publish anything; set --jwt-secret, --jwt-public-key or --jwt-jwks-url (see SECURITY.md)")
		return nil, nil
	}
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	v, err := jwtauth.New(c, logger)
	if err != nil {
		return nil, err
	}
	logger.Info("authorization is on: streams, POST /events and /projects need a token", "algorithms", strings.Join(v.Algorithms(), ","))
	return v, nil
}

// multiFlag is a flag that may be repeated, or given comma-separated.
type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*m = append(*m, s)
		}
	}
	return nil
}

// runToken is `statusd token`: it prints an HS256 token signed with
// --jwt-secret (or STATUSD_JWT_SECRET) as its last line on stdout, like
// Centrifugo's gentoken, so a newcomer can try authorization in one line.
func runToken(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("statusd token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: statusd token --jwt-secret SECRET [--subscribe SEL]... [--publish SEL]... [--ttl 1h] [--sub NAME]")
		fmt.Fprintln(stderr, "SEL is projects:* or projects:<id>; repeat the flag or separate selectors with commas.")
		fs.PrintDefaults()
	}
	var (
		secret, sub, issuer, audience string
		subscribe, publish            multiFlag
		ttl                           time.Duration
	)
	fs.StringVar(&secret, "jwt-secret", "", "HS256 secret the statusd that checks the token is started with")
	fs.Var(&subscribe, "subscribe", "selector the token may read (repeatable)")
	fs.Var(&publish, "publish", "selector the token may publish about (repeatable)")
	fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	fs.StringVar(&sub, "sub", "", "subject (who the token is for)")
	fs.StringVar(&issuer, "jwt-issuer", "", "iss claim (give it when statusd checks --jwt-issuer)")
	fs.StringVar(&audience, "jwt-audience", "", "aud claim (give it when statusd checks --jwt-audience)")
	for name, dst := range map[string]*string{"STATUSD_JWT_SECRET": &secret, "STATUSD_JWT_ISSUER": &issuer, "STATUSD_JWT_AUDIENCE": &audience} {
		if v, ok := lookupEnv(name); ok {
			*dst = v
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if secret == "" {
		return errors.New("token: give --jwt-secret (or STATUSD_JWT_SECRET)")
	}
	if len(subscribe) == 0 && len(publish) == 0 {
		fmt.Fprintln(stderr, "statusd token: warning: no --subscribe and no --publish: the token grants nothing")
	}
	tok, err := jwtauth.SignHS256([]byte(secret), jwtauth.Grant{
		Subject: sub, Subscribe: subscribe, Publish: publish, TTL: ttl, Issuer: issuer, Audience: audience,
	})
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// serveMetrics serves GET /metrics of reg on addr, a listener of its own
// (--metrics-addr), so that deployments can keep it off the public one.
// With withPprof it also serves net/http/pprof's profiles under
// /debug/pprof/ there (never on the public listener). With no addr it does
// nothing. A failure of the listener after it started
// is sent on failed.
func serveMetrics(addr string, withPprof bool, reg prometheus.Gatherer, logger *slog.Logger, failed chan<- error) (*http.Server, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	logger.Info("metrics on " + listenURL(ln.Addr()) + "/metrics")
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			select {
			case failed <- fmt.Errorf("metrics listener: %w", err):
			default:
			}
		}
	}()
	return srv, nil
}
