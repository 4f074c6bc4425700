package proxy

import "net/http"

// serveHealth answers /healthz: 200 while the process runs.
func (p *Proxy) serveHealth(w http.ResponseWriter) {
	writeHealth(w, http.StatusOK, "ok")
}

// serveReady answers /readyz: 200 when the replica serves, 503 while it
// drains at shutdown or while Config.Ready says it is not ready.
func (p *Proxy) serveReady(w http.ResponseWriter) {
	switch {
	case p.draining.Load():
		writeHealth(w, http.StatusServiceUnavailable, "draining")
	case p.cfg.Ready != nil && !p.cfg.Ready():
		writeHealth(w, http.StatusServiceUnavailable, "not ready")
	default:
		writeHealth(w, http.StatusOK, "ok")
	}
}

func writeHealth(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body + "\n"))
}
