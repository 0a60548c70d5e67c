package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestShardIdentity(t *testing.T) {
	env := func(pod string) func(string) string {
		return func(k string) string {
			if k == "POD_NAME" {
				return pod
			}
			return ""
		}
	}
	host := func(h string, err error) func() (string, error) { return func() (string, error) { return h, err } }
	for _, tc := range []struct {
		name, flag, pod, host string
		hostErr               error
		want                  string
		wantErr               bool
	}{
		{"flag first", "r1", "pod-a", "h", nil, "r1", false},
		{"then the Pod's name", "", "pod-a", "h", nil, "pod-a", false},
		{"then the hostname", "", "", "h", nil, "h", false},
		{"none", "", "", "", errors.New("no uts"), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := shardIdentity(tc.flag, env(tc.pod), host(tc.host, tc.hostErr))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("shardIdentity = %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestNewShardMember(t *testing.T) {
	// Never contacted: a member does nothing until Run.
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	on := func(mod func(f *runFlags)) *runFlags {
		f := &runFlags{identity: "r0"}
		f.shard.register(pflag.NewFlagSet("t", pflag.ContinueOnError))
		f.shard.on = true
		if mod != nil {
			mod(f)
		}
		return f
	}
	for _, tc := range []struct {
		name    string
		f       *runFlags
		member  bool
		wantErr string
	}{
		{"off", &runFlags{}, false, ""},
		{"App objects", on(nil), true, ""},
		{"with a config file", on(func(f *runFlags) { f.configFile = "refit.yaml" }), false, "only for App objects"},
		{"with --repo", on(func(f *runFlags) { f.src.repo = "https://git.example.com/x.git" }), false, "only for App objects"},
		{"with leader election", on(func(f *runFlags) { f.leaderElect = true }), false, "choose one"},
		{"renew deadline beyond the lease", on(func(f *runFlags) { f.shard.renewDeadline = 20 * time.Second }), false, "renew deadline"},
		{"lease in fractions of a second", on(func(f *runFlags) { f.shard.leaseDuration = 4500 * time.Millisecond }), false, "whole seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.f.newShardMember(client, "refit-system")
			if (m != nil) != tc.member || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("member %v, error %v; want member %v, error %q", m != nil, err, tc.member, tc.wantErr)
			}
			if m != nil && m.Identity() != "r0" {
				t.Errorf("identity %q, want r0", m.Identity())
			}
		})
	}
}
