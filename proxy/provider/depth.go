package provider

// MaxDepth is the deepest nesting of JSON arrays and objects accepted from a
// client or an upstream, as the gateway's own request check allows.
const MaxDepth = 128

// depthOK reports whether the JSON text b nests arrays and objects at most
// max levels deep. It scans iteratively, skipping strings (with their
// escapes), and does not validate anything else: malformed input that is
// shallow enough passes, to be refused by the parser that follows.
func depthOK(b []byte, max int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			depth++
			if depth > max {
				return false
			}
		case ']', '}':
			depth--
		}
	}
	return true
}
