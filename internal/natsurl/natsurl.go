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

// Redact hides the credentials of a comma-separated URL list for logs and
// messages: a password becomes user:xxxxx@, and a user without a password,
// which in a NATS URL is a token (nats://TOKEN@host), becomes xxxxx@. An
// entry that does not parse loses everything before its last '@'.
func Redact(list string) string {
	urls := Split(list)
	for i, raw := range urls {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			if at := strings.LastIndex(raw, "@"); at >= 0 {
				urls[i] = "xxxxx" + raw[at:]
			}
		case u.User == nil:
		case hasPassword(u.User):
			urls[i] = u.Redacted()
		default:
			u.User = url.User("xxxxx")
			urls[i] = u.String()
		}
	}
	return strings.Join(urls, ",")
}

func hasPassword(u *url.Userinfo) bool { _, ok := u.Password(); return ok }
