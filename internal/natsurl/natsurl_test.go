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
