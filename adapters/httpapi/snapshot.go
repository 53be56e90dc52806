package httpapi

import "net/http"

// snapshotParam reads the query parameter snapshot of a stream request:
// absent means true; otherwise it must be exactly "true" or "false" (ok is
// false for anything else, "1", "t" and an empty value included), as the
// README documents.
func snapshotParam(r *http.Request) (snapshot, ok bool) {
	values, present := r.URL.Query()["snapshot"]
	if !present {
		return true, true
	}
	for _, v := range values {
		if v != values[0] {
			return false, false // ?snapshot=true&snapshot=false
		}
	}
	switch values[0] {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}
