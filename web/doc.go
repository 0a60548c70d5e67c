// Package web is refit's live view in the browser: it keeps what the story
// events tell (apps, in-place rollouts as grids of Pods, the last rollouts)
// and serves it as a server-rendered page kept live by server-sent events.
// It is read-only and holds no secrets; it is not an API to drive refit, and
// it keeps no history beyond the last rollouts.
package web
