package main

import "testing"

func TestDecideStatusWrite(t *testing.T) {
	tests := []struct {
		name                           string
		sharded, owned, changes, event bool
		want                           statusWrite
	}{
		{name: "unsharded: write (it compares with the live status)", want: writeNow},
		{name: "unsharded, a change", changes: true, event: true, want: writeNow},
		{name: "sharded, another replica's", sharded: true, changes: true, event: true, want: writeNothing},
		{name: "sharded, ours, a change", sharded: true, owned: true, changes: true, want: writeLocked},
		{name: "sharded, ours, an event", sharded: true, owned: true, event: true, want: writeLocked},
		{name: "sharded, ours, nothing new: no Lease request", sharded: true, owned: true, want: writeNothing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := decideStatusWrite(tc.sharded, tc.owned, tc.changes, tc.event); got != tc.want {
				t.Errorf("decideStatusWrite = %d, want %d", got, tc.want)
			}
		})
	}
}
