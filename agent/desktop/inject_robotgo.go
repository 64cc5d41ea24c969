//go:build cgo && (darwin || windows || (linux && robotgo))

package desktop

import (
	"fmt"
	"runtime"

	"github.com/go-vgo/robotgo"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// newInjector returns the robotgo injector (macOS, Windows; Linux with
// -tags robotgo).
func newInjector(s screen) (injector, error) {
	if runtime.GOOS == "linux" {
		xs, ok := s.(interface{ displayName() string })
		if !ok {
			return nil, fmt.Errorf("no X11 display")
		}
		if err := robotgo.SetXDisplayName(xs.displayName()); err != nil {
			return nil, fmt.Errorf("robotgo: %w", err)
		}
	}
	return robotgoInjector{}, nil
}

type robotgoInjector struct{}

// robotgo key names of the named keys.
var robotgoKeys = map[namedKey]string{
	keyEnter: "enter", keyTab: "tab", keyEscape: "esc", keyBackspace: "backspace", keyDelete: "delete",
	keyInsert: "insert", keySpace: "space", keyLeft: "left", keyUp: "up", keyRight: "right",
	keyDown: "down", keyHome: "home", keyEnd: "end", keyPageUp: "pageup", keyPageDown: "pagedown",
	keyCapsLock: "capslock", keyShift: "shift", keyControl: "ctrl", keyAlt: "alt", keyMeta: "cmd",
}

var robotgoMods = [...]string{modShift: "shift", modCtrl: "ctrl", modAlt: "alt", modMeta: "cmd"}

func robotgoButton(b agentpb.PointerButton) string {
	switch b {
	case agentpb.PointerButton_POINTER_BUTTON_MIDDLE:
		return "center"
	case agentpb.PointerButton_POINTER_BUTTON_RIGHT:
		return "right"
	}
	return "left"
}

func (robotgoInjector) pointer(x, y int, action agentpb.PointerAction, button agentpb.PointerButton) error {
	robotgo.Move(x, y)
	b := robotgoButton(button)
	switch action {
	case agentpb.PointerAction_POINTER_ACTION_DOWN:
		return robotgo.Toggle(b, "down")
	case agentpb.PointerAction_POINTER_ACTION_UP:
		return robotgo.Toggle(b, "up")
	case agentpb.PointerAction_POINTER_ACTION_CLICK:
		robotgo.Click(b, false)
	case agentpb.PointerAction_POINTER_ACTION_DOUBLE_CLICK:
		robotgo.Click(b, true)
	}
	return nil
}

func (robotgoInjector) key(k keyCombo, action agentpb.KeyAction) error {
	name := string(k.char)
	if k.named >= keyF1 && k.named <= keyF12 {
		name = fmt.Sprintf("f%d", int(k.named-keyF1)+1)
	} else if k.named != keyNone {
		name = robotgoKeys[k.named]
	}
	args := make([]interface{}, 0, len(k.mods)+1)
	switch action {
	case agentpb.KeyAction_KEY_ACTION_DOWN:
		args = append(args, "down")
	case agentpb.KeyAction_KEY_ACTION_UP:
		args = append(args, "up")
	}
	for _, m := range k.mods {
		args = append(args, robotgoMods[m])
	}
	if len(args) > 0 && (args[0] == "down" || args[0] == "up") {
		return robotgo.KeyToggle(name, args...)
	}
	return robotgo.KeyTap(name, args...)
}

func (robotgoInjector) text(s string) error {
	robotgo.Type(s)
	return nil
}

func (robotgoInjector) scroll(x, y, dx, dy int) error {
	robotgo.Move(x, y)
	// robotgo: positive y scrolls up and positive x scrolls left.
	robotgo.Scroll(-dx, -dy)
	return nil
}
