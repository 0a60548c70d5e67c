package source

import (
	"testing"
	"time"
)

func TestNextStep(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	linger := 5 * time.Second
	tests := []struct {
		name     string
		st       loopState
		now      time.Time
		want     step
		wantWait time.Duration
	}{
		{name: "first poll at once", st: loopState{subs: 1, interval: time.Minute}, now: t0, want: stepPoll},
		{name: "polled a moment ago: wait the rest of the interval",
			st: loopState{subs: 2, interval: time.Minute, last: t0}, now: t0.Add(10 * time.Second), want: stepWait, wantWait: 50 * time.Second},
		{name: "interval over: poll",
			st: loopState{subs: 1, interval: time.Minute, last: t0}, now: t0.Add(time.Minute), want: stepPoll},
		{name: "a shorter interval joined: due already",
			st: loopState{subs: 2, interval: 10 * time.Second, last: t0}, now: t0.Add(30 * time.Second), want: stepPoll},
		{name: "the shortest interval left: the longer one counts from the last poll",
			st: loopState{subs: 1, interval: time.Hour, last: t0}, now: t0.Add(30 * time.Second), want: stepWait, wantWait: time.Hour - 30*time.Second},
		{name: "transient failures retry sooner, doubling",
			st: loopState{subs: 1, interval: time.Minute, last: t0, failures: 3}, now: t0.Add(time.Second), want: stepWait, wantWait: 3 * time.Second},
		{name: "the retry never waits past the interval",
			st: loopState{subs: 1, interval: 10 * time.Second, last: t0, failures: 20}, now: t0, want: stepWait, wantWait: 10 * time.Second},
		{name: "no subscriber: wait out the linger, no poll",
			st: loopState{subs: 0, interval: time.Second, last: t0, idleSince: t0.Add(time.Second)}, now: t0.Add(2 * time.Second), want: stepWait, wantWait: 4 * time.Second},
		{name: "no subscriber past the linger: stop",
			st: loopState{subs: 0, interval: time.Second, last: t0, idleSince: t0}, now: t0.Add(linger), want: stepStop},
		{name: "no subscriber, never polled: stop without polling",
			st: loopState{subs: 0, interval: time.Second, idleSince: t0}, now: t0.Add(time.Minute), want: stepStop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, wait := nextStep(tc.st, tc.now, linger)
			if got != tc.want || wait != tc.wantWait {
				t.Errorf("nextStep = %v, %v; want %v, %v", got, wait, tc.want, tc.wantWait)
			}
		})
	}
}
