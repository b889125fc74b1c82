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

// registeredNames are the JSON names the registered claims may take; a
// private claim by one of these names never reaches a token (usher refuses
// such claim names upstream of here anyway: grants.ValidateClaimName).
var registeredNames = sync.OnceValue(func() map[string]bool {
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
	walk(reflect.TypeFor[oidc.AccessTokenClaims]())
	return names
})

// marshalAccessClaims is the JWT payload of c: the registered claims, then
// the private ones (c.Claims) whose names are not registered.
func marshalAccessClaims(c *oidc.AccessTokenClaims) ([]byte, error) {
	reg, err := json.Marshal((*registeredAccessClaims)(c))
	if err != nil {
		return nil, err
	}
	private := make(map[string]any, len(c.Claims))
	for k, v := range c.Claims {
		if !registeredNames()[k] {
			private[k] = v
		}
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
