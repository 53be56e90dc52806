package fanout_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// FuzzLastEventID: a stream that resumes with any Last-Event-ID (a header
// or ?lastEventId= the client controls) gets, without a panic, either
// exactly the events after a position the history still holds — when the
// id is "<this hub's epoch>-<n>" with n from the oldest kept position to
// the latest — or the snapshot. The seed corpus is in
// testdata/fuzz/FuzzLastEventID, with ids written against the epoch
// "EPOCH", which the target replaces by the hub's.
func FuzzLastEventID(f *testing.F) {
	for _, s := range []string{"EPOCH-20", "EPOCH-13", "EPOCH-12", "EPOCH-11", "EPOCH-0", "EPOCH-21", "EPOCH--1", "EPOCH-+5",
		"EPOCH-007", "EPOCH-18446744073709551615", "EPOCH-18446744073709551616", "EPOCH", "other-5", "-5", "EPOCH-5-1", ""} {
		f.Add(s)
	}
	const history, events = 8, 20
	h := fanout.NewHub(fanout.Config{History: history})
	f.Cleanup(h.Close)
	all := dispatch(f, h, "a1 b1 a2 c1 b2 a3 a4 b3 c2 a5 b4 c3 a6 a7 b5 c4 a8 b6 c5 a9")
	if len(all) != events {
		f.Fatalf("%d events", len(all))
	}
	epoch, _, _ := strings.Cut(all[0].ID, "-")
	decimal := regexp.MustCompile(`^[0-9]+$`)

	f.Fuzz(func(t *testing.T, lastID string) {
		lastID = strings.ReplaceAll(lastID, "EPOCH", epoch)
		s, err := h.Subscribe(fanout.SubscribeOptions{
			Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: lastID,
		})
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		defer s.Close()
		got := s.Take(nil)

		// The model: resumable iff "<epoch>-<decimal n>", n in [oldest-1, last].
		after := -1
		if e, n, ok := strings.Cut(lastID, "-"); ok && e == epoch && decimal.MatchString(n) {
			if v, err := strconv.ParseUint(n, 10, 64); err == nil && v >= events-history && v <= events {
				after = int(v)
			}
		}
		if after >= 0 {
			if !s.Resumed() {
				t.Fatalf("%q: not resumed", lastID)
			}
			want := all[after:]
			if len(got) != len(want) {
				t.Fatalf("%q: replayed %d events, want %d", lastID, len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%q: replay[%d] = %s, want %s", lastID, i, got[i].ID, want[i].ID)
				}
			}
			return
		}
		if s.Resumed() {
			t.Fatalf("%q: resumed from an id the history cannot resume from", lastID)
		}
		if len(got) != 3 { // the snapshot: the latest of a, b and c
			t.Fatalf("%q: got %d events, want the snapshot of 3", lastID, len(got))
		}
		for _, e := range got {
			if latest, _ := h.Latest(e.ProjectID()); latest != e {
				t.Fatalf("%q: snapshot has %s, not the latest of %s", lastID, e.ID, e.ProjectID())
			}
		}
	})
}
