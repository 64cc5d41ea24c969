package desktop

import (
	"reflect"
	"testing"
)

func TestParseKey(t *testing.T) {
	for _, c := range []struct {
		in   string
		want keyCombo
	}{
		{"Enter", keyCombo{named: keyEnter}},
		{"return", keyCombo{named: keyEnter}},
		{"Tab", keyCombo{named: keyTab}},
		{"Escape", keyCombo{named: keyEscape}},
		{"Esc", keyCombo{named: keyEscape}},
		{"Backspace", keyCombo{named: keyBackspace}},
		{"Delete", keyCombo{named: keyDelete}},
		{"ArrowLeft", keyCombo{named: keyLeft}},
		{"Up", keyCombo{named: keyUp}},
		{"PageDown", keyCombo{named: keyPageDown}},
		{"Home", keyCombo{named: keyHome}},
		{"End", keyCombo{named: keyEnd}},
		{"F1", keyCombo{named: keyF1}},
		{"f12", keyCombo{named: keyF12}},
		{"Space", keyCombo{named: keySpace}},
		{" ", keyCombo{named: keySpace}},
		{"a", keyCombo{char: 'a'}},
		{"A", keyCombo{char: 'A'}},
		{"é", keyCombo{char: 'é'}},
		{"+", keyCombo{char: '+'}},
		{"ctrl+c", keyCombo{mods: []modifier{modCtrl}, char: 'c'}},
		{"Ctrl+C", keyCombo{mods: []modifier{modCtrl}, char: 'c'}},
		{"shift+Tab", keyCombo{mods: []modifier{modShift}, named: keyTab}},
		{"ctrl+alt+Delete", keyCombo{mods: []modifier{modCtrl, modAlt}, named: keyDelete}},
		{"cmd+shift+t", keyCombo{mods: []modifier{modMeta, modShift}, char: 't'}},
		{"ctrl++", keyCombo{mods: []modifier{modCtrl}, char: '+'}},
		{"Shift", keyCombo{named: keyShift}},
		{"control", keyCombo{named: keyControl}},
	} {
		got, err := parseKey(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("parseKey(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "hello", "ctrl+", "foo+c", "ctrl+nosuchkey", "F13", "\x01"} {
		if got, err := parseKey(bad); err == nil {
			t.Errorf("parseKey(%q) = %+v, want an error", bad, got)
		}
	}
}
