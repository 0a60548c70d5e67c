package source

import "time"

// SetLinger sets how long h keeps a poller without subscribers.
func SetLinger(h *Hub, d time.Duration) { h.linger = d }
