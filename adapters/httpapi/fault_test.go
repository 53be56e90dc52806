package httpapi_test

// Fault tests over loopback: bad input interleaved with good input.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// malformedPost is one kind of bad POST /events.
type malformedPost struct {
	name   string
	send   func(t *testing.T, g *gateway, n int) (status int, body string)
	status int // 0: the connection is cut, no answer expected
}

func postRaw(g *gateway, ct, body string) (int, string) {
	resp, err := g.srv.Client().Post(g.srv.URL+"/events", ct, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, string(b)
}

func malformedPosts() []malformedPost {
	js := "application/json"
	simple := func(name, ct string, status int, body func(n int) string) malformedPost {
		return malformedPost{name: name, status: status, send: func(t *testing.T, g *gateway, n int) (int, string) {
			return postRaw(g, ct, body(n))
		}}
	}
	return []malformedPost{
		simple("truncated JSON", js, 400, func(n int) string { return envelope("good", n, "")[:40] }),
		simple("not JSON", js, 400, func(int) string { return "<xml/>" }),
		simple("empty body", js, 400, func(int) string { return "" }),
		simple("unknown field", js, 400, func(n int) string { return strings.Replace(envelope("good", n, ""), `{"event"`, `{"x":1,"event"`, 1) }),
		simple("unknown event", js, 400, func(n int) string {
			return strings.Replace(envelope("good", n, ""), "project_updated", "project_deleted", 1)
		}),
		simple("forged topic in id", js, 400, func(n int) string { return envelope("good:*", n, "") }),
		simple("empty id", js, 400, func(n int) string { return envelope("", n, "") }),
		simple("error without message", js, 400, func(n int) string { return strings.Replace(envelope("good", n, "x"), `,"error":"x"`, "", 1) }),
		simple("update with error", js, 400, func(n int) string {
			return strings.Replace(envelope("good", n, ""), `}}`, `},"error":"x"}`, 1)
		}),
		simple("two envelopes", js, 400, func(n int) string { return envelope("good", n, "") + envelope("good", n, "") }),
		simple("invalid UTF-8 status", js, 400, func(n int) string { return strings.Replace(envelope("good", n, ""), "compiling", "\xff\xfe", 1) }),
		simple("deep nesting", js, 400, func(int) string { return strings.Repeat("[", 60_000) }),
		simple("wrong content type", "text/plain", 415, func(n int) string { return envelope("good", n, "") }),
		simple("over 64 KiB", js, 413, func(n int) string {
			return strings.Replace(envelope("good", n, ""), "app-", "app-"+strings.Repeat("x", 65<<10), 1)
		}),
		{name: "body shorter than Content-Length", send: func(t *testing.T, g *gateway, n int) (int, string) {
			conn, err := net.Dial("tcp", g.srv.Listener.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			body := envelope("good", n, "")
			_, err = fmt.Fprintf(conn, "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body)+10, body)
			require.NoError(t, err)
			require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return 0, err.Error()
			}
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}, status: 400},
		{name: "bad chunked encoding", send: func(t *testing.T, g *gateway, n int) (int, string) {
			conn, err := net.Dial("tcp", g.srv.Listener.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			_, err = fmt.Fprintf(conn, "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n%s\r\n0\r\n\r\n", envelope("good", n, ""))
			require.NoError(t, err)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return 0, err.Error()
			}
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}, status: 400},
	}
}

// TestMalformedPostsInterleavedWithValidOnes: 1,000 malformed POSTs of
// every kind, each between two valid ones. Every malformed one gets its
// 4xx with a JSON error; every valid one is delivered to a stream, in
// order, nothing else is.
func TestMalformedPostsInterleavedWithValidOnes(t *testing.T) {
	const malformed = 1_000
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) { c.BodyReadTimeout = 2 * time.Second })
	s := g.openStream(t, "/events/projects?snapshot=false", nil)
	kinds := malformedPosts()

	received := make(chan error, 1)
	go func() {
		for v := 1; v <= malformed+1; v++ {
			select {
			case ev, ok := <-s.frames:
				if !ok {
					received <- fmt.Errorf("stream ended after %d events", v-1)
					return
				}
				if ev.Event == "" {
					v--
					continue
				}
				if want := fmt.Sprintf(`"name":"app-%d"`, v); !strings.Contains(ev.Data, want) || !strings.Contains(ev.Data, `"id":"good"`) {
					received <- fmt.Errorf("event %d: got %s", v, ev.Data)
					return
				}
			case <-time.After(waitFor):
				received <- fmt.Errorf("event %d never arrived", v)
				return
			}
		}
		received <- nil
	}()

	counts := map[string]int{}
	for i := range malformed {
		resp, body := g.post(t, "application/json", envelope("good", i+1, ""))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "valid POST %d: %s", i+1, body)

		k := kinds[i%len(kinds)]
		status, body := k.send(t, g, i+1)
		require.Equal(t, k.status, status, "%s: %s", k.name, body)
		assert.Contains(t, body, `{"error":`, k.name)
		counts[k.name]++
	}
	resp, body := g.post(t, "application/json", envelope("good", malformed+1, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	require.NoError(t, <-received)
	s.quiet(200 * time.Millisecond)
	t.Logf("%d valid POSTs delivered in order between %d malformed ones of %d kinds: %v", malformed+1, malformed, len(kinds), counts)
}
