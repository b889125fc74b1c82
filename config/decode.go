package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration that YAML and the environment accept as a Go
// duration string ("15m", "168h") or as plain integer seconds ("60").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText accepts a Go duration string or integer seconds.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// UnmarshalYAML accepts a Go duration string or integer seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a string such as \"15m\" or integer seconds", n.Line)
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// ParseDuration parses a Go duration string ("15m", "168h") or plain
// integer seconds ("60").
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New(`empty duration: use e.g. "15m", "168h" or integer seconds`)
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n > math.MaxInt64/int64(time.Second) || n < math.MinInt64/int64(time.Second) {
			return 0, fmt.Errorf("duration %q is out of range", s)
		}
		return Duration(time.Duration(n) * time.Second), nil
	}
	v, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf(`invalid duration %q: use e.g. "15m", "168h" or integer seconds`, s)
	}
	return Duration(v), nil
}

var (
	configType   = reflect.TypeFor[Config]()
	durationType = reflect.TypeFor[Duration]()
)

// maxDepth bounds the node walk (merge keys may refer to their own parent).
const maxDepth = 32

// yamlName is the YAML key of a struct field, or "" when it has none.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" {
		return ""
	}
	return name
}

func fieldByYAML(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if n := yamlName(f); n != "" && n == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func pathOrRoot(p string) string {
	if p == "" {
		return "(top level)"
	}
	return p
}

// checkNode walks n against type t, reporting unknown keys and values that
// do not decode into their field, each by its YAML path. It prunes what it
// reports from the tree (and returns false when n itself is unusable), so
// that the rest still decodes and validates: one run reports every problem.
func checkNode(n *yaml.Node, t reflect.Type, path string, depth int, errs *[]error) bool {
	if depth > maxDepth {
		*errs = append(*errs, fieldErr(pathOrRoot(path), "nested too deeply"))
		return false
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return true
		}
		n = n.Alias
	}
	isStruct := t.Kind() == reflect.Struct && t != durationType
	isStructSlice := t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct
	if !isStruct && !isStructSlice {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			*errs = append(*errs, fieldErr(pathOrRoot(path), cleanYAMLError(err)))
			return false
		}
		return true
	}
	if n.ShortTag() == "!!null" {
		return true
	}
	if isStructSlice {
		if n.Kind != yaml.SequenceNode {
			*errs = append(*errs, fieldErr(pathOrRoot(path), fmt.Sprintf("line %d: must be a list", n.Line)))
			return false
		}
		ok := true
		for i, el := range n.Content {
			// A bad element drops the whole list: dropping one would shift
			// the indexes the other messages name.
			ok = checkNode(el, t.Elem(), fmt.Sprintf("%s[%d]", path, i), depth+1, errs) && ok
		}
		return ok
	}
	if n.Kind != yaml.MappingNode {
		*errs = append(*errs, fieldErr(pathOrRoot(path), fmt.Sprintf("line %d: must be a mapping of keys to values", n.Line)))
		return false
	}
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if checkPair(k, v, t, path, depth, errs) {
			kept = append(kept, k, v)
		}
	}
	n.Content = kept
	return true
}

// checkPair checks one key: value of a mapping decoded into struct type t.
func checkPair(k, v *yaml.Node, t reflect.Type, path string, depth int, errs *[]error) bool {
	if k.Kind != yaml.ScalarNode {
		*errs = append(*errs, fieldErr(pathOrRoot(path), fmt.Sprintf("line %d: keys must be plain strings", k.Line)))
		return false
	}
	if k.ShortTag() == "!!merge" {
		mv := v
		if mv.Kind == yaml.AliasNode && mv.Alias != nil {
			mv = mv.Alias
		}
		if mv.Kind != yaml.SequenceNode {
			return checkNode(mv, t, path, depth+1, errs)
		}
		ok := true
		for _, m := range mv.Content {
			ok = checkNode(m, t, path, depth+1, errs) && ok
		}
		return ok
	}
	f, ok := fieldByYAML(t, k.Value)
	if !ok {
		msg := fmt.Sprintf("line %d: unknown key", k.Line)
		if near := nearestKey(t, k.Value); near != "" {
			msg += fmt.Sprintf("; did you mean %q?", near)
		}
		*errs = append(*errs, fieldErr(joinPath(path, k.Value), msg))
		return false
	}
	return checkNode(v, f.Type, joinPath(path, k.Value), depth+1, errs)
}

// nearestKey is the key of t closest to a misspelt one, or "" when none is
// close enough to be the likely intent.
func nearestKey(t reflect.Type, key string) string {
	best, bestDist := "", 0
	for i := 0; i < t.NumField(); i++ {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		d := editDistance(strings.ToLower(key), name)
		// A third of the name (at least 1, at most 3) keeps "log"/"tls"
		// from suggesting each other.
		limit := min(max(len(name)/3, 1), 3)
		if d <= limit && (best == "" || d < bestDist) {
			best, bestDist = name, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance between a and b:
// Levenshtein plus swapped neighbours ("levle"), the commonest typo. Bytes:
// YAML keys are ASCII.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:")
	s = strings.TrimPrefix(s, "yaml: ")
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// applyEnv overrides every scalar and string-slice field from USHER_<PATH>
// (the YAML path upper-cased, "." → "_"), then client secrets from
// USHER_CLIENT_<ID>_SECRET.
func applyEnv(c *Config, env func(string) (string, bool)) error {
	var errs []error
	applyEnvStruct(reflect.ValueOf(c).Elem(), "USHER", env, &errs)

	owner := map[string]int{}
	for i := range c.Clients {
		id := c.Clients[i].ID
		if id == "" {
			continue
		}
		name := ClientSecretEnv(id)
		v, ok := env(name)
		if !ok {
			continue
		}
		if j, dup := owner[name]; dup {
			errs = append(errs, fmt.Errorf("%s: ambiguous: clients[%d] (%q) and clients[%d] (%q) share this variable name", name, j, c.Clients[j].ID, i, id))
			continue
		}
		owner[name] = i
		c.Clients[i].Secret = v
		c.Clients[i].SecretSHA256 = ""
	}
	for i := range c.Webhooks {
		if c.Webhooks[i].ID == "" {
			continue
		}
		if v, ok := env(WebhookSecretsEnv(c.Webhooks[i].ID)); ok {
			var secrets []string
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					secrets = append(secrets, p)
				}
			}
			c.Webhooks[i].Secrets = secrets
		}
	}
	return errors.Join(errs...)
}

// EnvNames lists every USHER_* variable the generic override understands
// (client secrets excluded), in field order.
func EnvNames() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			v := prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, ".", "_"))
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != durationType:
				walk(f.Type, v)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() != reflect.String:
				// lists of structs (clients) are not overridable
			default:
				out = append(out, v)
			}
		}
	}
	walk(configType, "USHER")
	return out
}

func applyEnvStruct(v reflect.Value, prefix string, env func(string) (string, bool), errs *[]error) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		fv := v.Field(i)
		varName := prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, ".", "_"))
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			applyEnvStruct(fv, varName, env, errs)
			continue
		}
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() != reflect.String {
			continue
		}
		raw, ok := env(varName)
		if !ok {
			continue
		}
		if err := setFromEnv(fv, raw); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", varName, err))
		}
	}
}

func setFromEnv(fv reflect.Value, raw string) error {
	switch p := fv.Addr().Interface().(type) {
	case *string:
		*p = raw
	case *Duration:
		d, err := ParseDuration(raw)
		if err != nil {
			return err
		}
		*p = d
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("invalid boolean %q: use true or false", raw)
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("invalid integer %q", raw)
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", raw)
		}
		*p = f
	case *[]string:
		var out []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		*p = out
	default:
		return fmt.Errorf("cannot be set from the environment (type %s)", fv.Type())
	}
	return nil
}

// decodeBase64 accepts standard or URL-safe base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("is not valid base64")
}
