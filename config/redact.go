package config

import (
	"net/url"
	"reflect"
)

// Redacted returns a deep copy of c in which every secret that is set
// (fields tagged usher:"secret", and the password inside store.redis.url)
// is replaced by "REDACTED". For `usher config check`.
func (c *Config) Redacted() *Config {
	out := c.Clone()
	redact(reflect.ValueOf(out).Elem())
	if r := out.Store.Redis.URL; r != "" {
		if u, err := url.Parse(r); err != nil {
			out.Store.Redis.URL = Redaction
		} else if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), Redaction)
			out.Store.Redis.URL = u.String()
		}
	}
	return out
}

func redact(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			fv := v.Field(i)
			if f.Tag.Get("usher") == "secret" && fv.Kind() == reflect.String {
				if fv.String() != "" {
					fv.SetString(Redaction)
				}
				continue
			}
			if f.Tag.Get("usher") == "secret" && fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String {
				for j := 0; j < fv.Len(); j++ {
					fv.Index(j).SetString(Redaction)
				}
				continue
			}
			redact(fv)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			redact(v.Index(i))
		}
	}
}

// Clone returns a deep copy of c (no slice shared with c).
func (c *Config) Clone() *Config {
	out := *c
	cloneSlices(reflect.ValueOf(&out).Elem())
	return &out
}

func cloneSlices(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				cloneSlices(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.IsNil() {
			return
		}
		n := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(n, v)
		v.Set(n)
		for i := 0; i < n.Len(); i++ {
			cloneSlices(n.Index(i))
		}
	}
}
