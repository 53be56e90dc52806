package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error string `json:"error"`
}

// writeJSON writes v as the JSON body of a response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError writes {"error": msg} with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

// jsonErrors turns the plain-text 404 and 405 answers of http.ServeMux into
// JSON ones, so that every error of the API has a JSON body.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return jsonErrorsHandler{mux}
}

// jsonErrorsHandler is jsonErrors' handler. It is a type rather than a
// closure in a HandlerFunc, and its fallback is in a function of its own,
// to keep its frame small: it lies under every stream for as long as the
// stream lasts (see onFreshStack).
type jsonErrorsHandler struct{ mux *http.ServeMux }

func (h jsonErrorsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern != "" {
		h.mux.ServeHTTP(w, r)
		return
	}
	serveJSONFallback(h.mux, w, r)
}

// serveJSONFallback serves, with a JSON body, what mux answers a request
// it has no pattern for.
func serveJSONFallback(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{header: http.Header{}}
	mux.ServeHTTP(rec, r)
	if allow := rec.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	switch {
	case rec.status >= 300 && rec.status < 400:
		w.Header().Set("Location", rec.header.Get("Location"))
		w.WriteHeader(rec.status)
	case rec.status == http.StatusMethodNotAllowed:
		writeError(w, rec.status, "method "+r.Method+" not allowed on "+r.URL.Path)
	case rec.status == http.StatusNotFound || rec.status == 0:
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	default:
		writeError(w, rec.status, string(bytes.TrimSpace(rec.body.Bytes())))
	}
}

// statusRecorder captures what the mux's fallback handlers write.
type statusRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *statusRecorder) Header() http.Header { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}
