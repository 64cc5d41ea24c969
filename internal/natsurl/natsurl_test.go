package natsurl

import (
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{""}, nil},
		{[]string{"nats://a:4222"}, []string{"nats://a:4222"}},
		{[]string{"nats://a:1, nats://b:2,,nats://c:3 "}, []string{"nats://a:1", "nats://b:2", "nats://c:3"}},
		{[]string{"nats://a:1,nats://b:2", " nats://c:3"}, []string{"nats://a:1", "nats://b:2", "nats://c:3"}},
	} {
		if got := Split(tc.in...); !slices.Equal(got, tc.want) {
			t.Errorf("Split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Every password and token of a list is hidden, not only the first one's.
func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://h:4222", "nats://h:4222"},
		{"nats://control:pw1@h1:4222,nats://control:pw2@h2:4222", "nats://control:xxxxx@h1:4222,nats://control:xxxxx@h2:4222"},
		{"nats://h1:4222, nats://tok@h2:4222", "nats://h1:4222,nats://xxxxx@h2:4222"},
		{"nats://u:p w@h:1", "xxxxx@h:1"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
