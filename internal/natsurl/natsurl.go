// Package natsurl handles lists of NATS server URLs.
package natsurl

import "strings"

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
