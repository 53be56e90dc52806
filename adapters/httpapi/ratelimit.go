package httpapi

import (
	"container/list"
	"context"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
)

// keyedLimiter is a token bucket per key (golang.org/x/time/rate) with a
// bounded number of keys. A bucket that has refilled completely is
// equivalent to a fresh one, so it is forgotten; the least recently used
// buckets are examined (two per call) and dropped when full, and past
// maxKeys the least recently used is dropped whatever its state. No
// goroutine sweeps: the work is done by the calls.
type keyedLimiter struct {
	limit   rate.Limit
	burst   int
	maxKeys int
	now     func() time.Time

	mu   sync.Mutex
	keys map[string]*list.Element // value *keyedBucket
	lru  *list.List               // least recently used first
}

type keyedBucket struct {
	key string
	lim *rate.Limiter
}

func newKeyedLimiter(perSecond float64, burst, maxKeys int) *keyedLimiter {
	return &keyedLimiter{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		maxKeys: maxKeys,
		now:     time.Now,
		keys:    make(map[string]*list.Element),
		lru:     list.New(),
	}
}

// allow takes a token from key's bucket. When there is none it returns
// false and how long until there will be one.
func (l *keyedLimiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evictLocked(now, 2)
	var b *keyedBucket
	if el, ok := l.keys[key]; ok {
		l.lru.MoveToBack(el)
		b = el.Value.(*keyedBucket)
	} else {
		b = &keyedBucket{key: key, lim: rate.NewLimiter(l.limit, l.burst)}
		l.keys[key] = l.lru.PushBack(b)
		for l.lru.Len() > l.maxKeys {
			l.removeLocked(l.lru.Front())
		}
	}
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	r := b.lim.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return false, wait
}

// evictLocked drops up to n of the least recently used buckets that have
// refilled.
func (l *keyedLimiter) evictLocked(now time.Time, n int) {
	for range n {
		el := l.lru.Front()
		if el == nil || el.Value.(*keyedBucket).lim.TokensAt(now) < float64(l.burst) {
			return
		}
		l.removeLocked(el)
	}
}

func (l *keyedLimiter) removeLocked(el *list.Element) {
	l.lru.Remove(el)
	delete(l.keys, el.Value.(*keyedBucket).key)
}

// len returns the number of buckets held.
func (l *keyedLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// retryAfter renders a wait as the whole seconds of a Retry-After header,
// at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

// allowPublish applies the publish rate limit to a POST /events. When the
// caller's bucket is empty it answers 429 with Retry-After and returns
// false.
func (s *Server) allowPublish(w http.ResponseWriter, r *http.Request) bool {
	if s.publishLimiter == nil {
		return true
	}
	key := s.cfg.PublishRateKey(r)
	ok, wait := s.publishLimiter.allow(key)
	if ok {
		return true
	}
	s.cfg.Metrics.RequestRejected(metrics.RejectedPublishRate)
	w.Header().Set("Retry-After", retryAfter(wait))
	writeError(w, http.StatusTooManyRequests, "publish rate limit exceeded ("+
		strconv.FormatFloat(s.cfg.PublishRate, 'g', -1, 64)+" events/s, burst "+strconv.Itoa(s.cfg.PublishBurst)+"); retry later")
	return false
}

// WithRateLimitKey returns ctx carrying key as the identity that the
// publish rate limit counts a request against. Authentication middleware
// that runs before the Server's handlers sets it to the token subject, so
// that a client is limited per identity rather than per address.
func WithRateLimitKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, rateLimitKey{}, key)
}

// RateLimitKey is the default Config.PublishRateKey: the key set with
// WithRateLimitKey ("sub:" + key), else the client address (see
// ClientAddr; an IPv6 client by its /64).
func RateLimitKey(r *http.Request) string {
	if k, ok := r.Context().Value(rateLimitKey{}).(string); ok && k != "" {
		return "sub:" + k
	}
	return addrKey(ClientAddr(r))
}

type rateLimitKey struct{}
