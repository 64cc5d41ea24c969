// Package natsurl handles lists of NATS server URLs.
package natsurl

import (
	"net/url"
	"strings"
)

// Split splits comma-separated NATS URLs (each entry may itself be a list),
// trimming spaces and dropping empty entries: what nats.Connect does with
// the string it is given, so a list survives a split and a join.
func Split(lists ...string) []string {
	var out []string
	for _, l := range lists {
		for _, u := range strings.Split(l, ",") {
			if u = strings.TrimSpace(u); u != "" {
				out = append(out, u)
			}
		}
	}
	return out
}

// Redact hides the passwords of a comma-separated URL list (user:xxxxx@);
// an entry that does not parse loses everything before its last '@'.
func Redact(list string) string {
	urls := Split(list)
	for i, raw := range urls {
		if u, err := url.Parse(raw); err == nil {
			if u.User != nil {
				urls[i] = u.Redacted()
			}
		} else if at := strings.LastIndex(raw, "@"); at >= 0 {
			urls[i] = "xxxxx" + raw[at:]
		}
	}
	return strings.Join(urls, ",")
}
