package protocol

// MaxChannelLen is the longest channel name accepted, in bytes.
const MaxChannelLen = 200

// ValidChannel reports whether name is a legal channel name: 1–200 bytes of
// ASCII letters, digits and _ - : . @
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '-', c == ':', c == '.', c == '@':
		default:
			return false
		}
	}
	return true
}
