package redis

import "strings"

// Packed invitation IDs (record format v5): an ID of base64url characters,
// after "inv-" or "inv_" or none, kept as one marker byte (0xf8 + which
// prefix) and the characters' 6 bits each, packed big-endian, the last
// byte padded with zeros: "inv-" and 16 characters (what grants makes) in
// 13 bytes instead of 20. The byte count gives the character count back,
// except for a count of 4m+3, which would take as many bytes as 4m+4:
// such an ID is not packed. No UTF-8 text holds a byte from 0xf8, so a
// packed ID is told from one kept as text by its first byte.

var packPrefixes = [...]string{"inv-", "inv_", ""}

const (
	packMarker = 0xf8
	b64chars   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)

var b64index = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := range len(b64chars) {
		t[b64chars[i]] = int8(i)
	}
	return t
}()

// packID is id packed; ok false when it cannot be.
func packID(id string) (string, bool) {
	for k, p := range packPrefixes {
		rest, ok := strings.CutPrefix(id, p)
		if !ok || rest == "" || len(rest)%4 == 3 {
			continue
		}
		out := make([]byte, 1, 1+(len(rest)*6+7)/8)
		out[0] = packMarker + byte(k)
		var acc uint32
		n := 0
		for i := range len(rest) {
			v := b64index[rest[i]]
			if v < 0 {
				return "", false // the shorter prefixes leave the same character
			}
			acc, n = acc<<6|uint32(v), n+6
			if n >= 8 {
				out, n = append(out, byte(acc>>(n-8))), n-8
			}
		}
		if n > 0 {
			out = append(out, byte(acc<<(8-n)))
		}
		return string(out), true
	}
	return "", false
}

// unpackID is the ID packID packed into v; v itself when v is not packed.
func unpackID(v string) string {
	if v == "" || v[0] < packMarker || int(v[0]-packMarker) >= len(packPrefixes) {
		return v
	}
	body := v[1:]
	chars := len(body) / 3 * 4
	switch len(body) % 3 {
	case 1:
		chars++
	case 2:
		chars += 2
	}
	var b strings.Builder
	b.Grow(len(packPrefixes[v[0]-packMarker]) + chars)
	b.WriteString(packPrefixes[v[0]-packMarker])
	var acc uint32
	n := 0
	for i := 0; chars > 0; {
		if n < 6 {
			acc, n, i = acc<<8|uint32(body[i]), n+8, i+1
		}
		b.WriteByte(b64chars[(acc>>(n-6))&63])
		n -= 6
		chars--
	}
	return b.String()
}
