package web

import (
	"bytes"
	"net/http"
	"time"
)

// serveEvents streams the state as server-sent events: each "state" event
// carries the page's live part, rendered here as on the page, which the
// script puts in place. Sending the rendered part keeps one renderer (the
// server's templates, which escape) and a script of a few lines.
func (v *View) serveEvents(w http.ResponseWriter, r *http.Request) {
	signal, ok := v.join()
	if !ok {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many viewers", http.StatusServiceUnavailable)
		return
	}
	defer v.leave(signal)
	rc := http.NewResponseController(w)
	// The service's server bounds reads and writes for webhooks; a stream
	// lives longer, so it sets its own write deadline per update and
	// clears the server's read deadline too.
	_ = rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	beat := time.NewTicker(v.opts.Heartbeat)
	defer beat.Stop()
	var buf bytes.Buffer
	send := func(b []byte) bool {
		// A client that does not take an update in time is dropped: it
		// must not hold a goroutine and a connection for ever.
		_ = rc.SetWriteDeadline(time.Now().Add(v.opts.WriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for {
		buf.Reset()
		buf.WriteString("event: state\n")
		if err := v.renderLive(&buf); err != nil {
			return
		}
		buf.WriteString("\n")
		if !send(buf.Bytes()) {
			return
		}
		for woken := false; !woken; {
			select {
			case <-r.Context().Done():
				return
			case <-signal:
				woken = true
			case <-beat.C:
				if !send([]byte(": beat\n\n")) {
					return
				}
			}
		}
	}
}

// renderLive writes the live part as the data lines of one event.
func (v *View) renderLive(buf *bytes.Buffer) error {
	var html bytes.Buffer
	if err := v.page.ExecuteTemplate(&html, "live", v.State()); err != nil {
		return err
	}
	for line := range bytes.Lines(html.Bytes()) {
		buf.WriteString("data: ")
		buf.Write(bytes.TrimRight(line, "\r\n"))
		buf.WriteString("\n")
	}
	return nil
}

func (v *View) join() (chan struct{}, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.clients) >= v.opts.Clients {
		return nil, false
	}
	c := make(chan struct{}, 1)
	v.clients[c] = struct{}{}
	return c, true
}

func (v *View) leave(c chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.clients, c)
}
