package broker

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// registeredAccessClaims is oidc.AccessTokenClaims without its MarshalJSON,
// which encodes the registered claims, decodes them into a map with the
// private ones and encodes that again: a third of the token endpoint's
// non-signing CPU. marshalAccessClaims writes the same JSON in one pass.
type registeredAccessClaims oidc.AccessTokenClaims

// registeredAccessNames and registeredIDNames are the JSON names the
// registered claims may take (usher refuses them as names of its own
// claims: grants.ValidateClaimName).
var (
	registeredAccessNames = sync.OnceValue(func() map[string]bool { return jsonNames(reflect.TypeFor[oidc.AccessTokenClaims]()) })
	registeredIDNames     = sync.OnceValue(func() map[string]bool { return jsonNames(reflect.TypeFor[oidc.IDTokenClaims]()) })
)

// jsonNames are the JSON names of t's fields, embedded structs' included.
func jsonNames(t reflect.Type) map[string]bool {
	names := map[string]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
				names[name] = true
			}
		}
	}
	walk(t)
	return names
}

// marshalAccessClaims is the JWT payload of c: the registered claims, then
// the private ones (c.Claims) whose names are not registered.
func marshalAccessClaims(c *oidc.AccessTokenClaims) ([]byte, error) {
	reg, err := json.Marshal((*registeredAccessClaims)(c))
	if err != nil {
		return nil, err
	}
	return appendPrivateClaims(reg, c.Claims, registeredAccessNames())
}

// appendPrivateClaims adds the private claims to the JSON object reg, as the
// library's merge does: a private claim by a registered name is left out
// when reg holds that claim, and kept when reg omitted it as empty.
func appendPrivateClaims(reg []byte, claims map[string]any, registered map[string]bool) ([]byte, error) {
	private := make(map[string]any, len(claims))
	var present map[string]json.RawMessage // read only for a clash, which usher's own claims never make
	for k, v := range claims {
		if registered[k] {
			if present == nil {
				if err := json.Unmarshal(reg, &present); err != nil {
					return nil, err
				}
			}
			if _, ok := present[k]; ok {
				continue
			}
		}
		private[k] = v
	}
	if len(private) == 0 {
		return reg, nil
	}
	extra, err := json.Marshal(private)
	if err != nil {
		return nil, err
	}
	if len(reg) <= 2 { // "{}"
		return extra, nil
	}
	out := make([]byte, 0, len(reg)+len(extra))
	out = append(out, reg[:len(reg)-1]...)
	out = append(out, ',')
	return append(out, extra[1:]...), nil
}
