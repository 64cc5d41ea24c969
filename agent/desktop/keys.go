package desktop

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// namedKey is a platform-independent key; each backend maps it to its own
// code (an X keysym, a robotgo key name).
type namedKey uint8

const (
	keyNone namedKey = iota
	keyEnter
	keyTab
	keyEscape
	keyBackspace
	keyDelete
	keyInsert
	keySpace
	keyLeft
	keyUp
	keyRight
	keyDown
	keyHome
	keyEnd
	keyPageUp
	keyPageDown
	keyCapsLock
	keyShift
	keyControl
	keyAlt
	keyMeta
	keyF1 // keyF1 .. keyF1+11 are F1–F12
)

const keyF12 = keyF1 + 11

// modifier is held around a key in a combo like "ctrl+shift+t".
type modifier uint8

const (
	modShift modifier = iota
	modCtrl
	modAlt
	modMeta
)

// modKey is the key a modifier presses.
var modKey = [...]namedKey{modShift: keyShift, modCtrl: keyControl, modAlt: keyAlt, modMeta: keyMeta}

// keyCombo is a parsed key name: modifiers, then either a named key or a
// character.
type keyCombo struct {
	mods  []modifier
	named namedKey
	char  rune
}

var keyNames = map[string]namedKey{
	"enter": keyEnter, "return": keyEnter,
	"tab":    keyTab,
	"escape": keyEscape, "esc": keyEscape,
	"backspace": keyBackspace,
	"delete":    keyDelete, "del": keyDelete,
	"insert": keyInsert, "ins": keyInsert,
	"space": keySpace, " ": keySpace,
	"arrowleft": keyLeft, "left": keyLeft,
	"arrowup": keyUp, "up": keyUp,
	"arrowright": keyRight, "right": keyRight,
	"arrowdown": keyDown, "down": keyDown,
	"home": keyHome, "end": keyEnd,
	"pageup": keyPageUp, "pgup": keyPageUp, "page_up": keyPageUp,
	"pagedown": keyPageDown, "pgdn": keyPageDown, "page_down": keyPageDown,
	"capslock": keyCapsLock,
	"shift":    keyShift,
	"ctrl":     keyControl, "control": keyControl,
	"alt": keyAlt, "option": keyAlt,
	"meta": keyMeta, "cmd": keyMeta, "command": keyMeta, "super": keyMeta, "win": keyMeta,
}

var modNames = map[string]modifier{
	"shift": modShift,
	"ctrl":  modCtrl, "control": modCtrl,
	"alt": modAlt, "option": modAlt,
	"meta": modMeta, "cmd": modMeta, "command": modMeta, "super": modMeta, "win": modMeta,
}

func init() {
	for i := 0; i < 12; i++ {
		keyNames[fmt.Sprintf("f%d", i+1)] = keyF1 + namedKey(i)
	}
}

// parseKey parses a platform-independent key name: a named key ("Enter",
// "ArrowLeft", "F5", "PageDown"; case-insensitive), a single character
// ("a", "A", "/"), or a combo of modifiers and one of those joined by '+'
// ("ctrl+c", "shift+Tab", "ctrl+alt+Delete", "ctrl++"). In a combo, a
// letter is case-folded: "ctrl+C" is ctrl+c; say "ctrl+shift+c" for shift.
func parseKey(s string) (keyCombo, error) {
	if s == "" {
		return keyCombo{}, fmt.Errorf("empty key name")
	}
	var modPart, keyPart string
	switch {
	case s == "+":
		keyPart = "+"
	case strings.HasSuffix(s, "++"):
		modPart, keyPart = s[:len(s)-2], "+"
	default:
		if i := strings.LastIndexByte(s, '+'); i >= 0 {
			modPart, keyPart = s[:i], s[i+1:]
		} else {
			keyPart = s
		}
	}
	var kc keyCombo
	if modPart != "" {
		for _, m := range strings.Split(modPart, "+") {
			mod, ok := modNames[strings.ToLower(strings.TrimSpace(m))]
			if !ok {
				return keyCombo{}, fmt.Errorf("unknown modifier %q in key %q", m, s)
			}
			kc.mods = append(kc.mods, mod)
		}
	}
	if k, ok := keyNames[strings.ToLower(keyPart)]; ok {
		kc.named = k
		return kc, nil
	}
	if utf8.RuneCountInString(keyPart) == 1 {
		r, _ := utf8.DecodeRuneInString(keyPart)
		if r == utf8.RuneError || unicode.IsControl(r) {
			return keyCombo{}, fmt.Errorf("invalid key character %q", keyPart)
		}
		if len(kc.mods) > 0 {
			r = unicode.ToLower(r)
		}
		kc.char = r
		return kc, nil
	}
	return keyCombo{}, fmt.Errorf("unknown key name %q", keyPart)
}

// hasMod reports whether the combo holds m.
func (k keyCombo) hasMod(m modifier) bool {
	for _, x := range k.mods {
		if x == m {
			return true
		}
	}
	return false
}
