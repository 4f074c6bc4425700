package config

import (
	"encoding/json"
	"fmt"
)

const redacted = "<redacted>"

// Secret is a string that never prints: every fmt verb, JSON, text (and so
// YAML) and zerolog (through Stringer or JSON) show "<redacted>" when it is
// set and "" when it is empty. Value returns the real string.
type Secret string

// Value returns the secret itself. Call it only where the value is used,
// never to log or print it.
func (s Secret) Value() string { return string(s) }

// String returns "<redacted>", or "" when the secret is empty.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString returns the %#v form: "<redacted>" quoted, or "" quoted.
func (s Secret) GoString() string { return fmt.Sprintf("%q", s.String()) }

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x, %d, ...) print the
// redacted form, so no verb can reveal the value.
func (s Secret) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		fmt.Fprint(f, s.GoString())
	case verb == 'q':
		fmt.Fprintf(f, "%q", s.String())
	default:
		fmt.Fprint(f, s.String())
	}
}

// MarshalJSON encodes the redacted form as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText returns the redacted form; encoders that honour
// encoding.TextMarshaler (YAML, map keys, some loggers) use it.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
