package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// unknownFieldError: a request body's JSON object has a member the target
// struct has no field for, which json.Decoder.DisallowUnknownFields refuses
// with an error of no exported type. decodeStrict finds the member itself so
// that no caller reads encoding/json's error text.
type unknownFieldError struct{ Field string }

func (e *unknownFieldError) Error() string { return fmt.Sprintf("json: unknown field %q", e.Field) }

// decodeStrict decodes the first JSON value of body into v (a pointer to a
// struct) as a json.Decoder with DisallowUnknownFields does. When that fails
// for a reason other than bad syntax or a wrong type, and the body names a
// top-level member v has no field for, the error is an *unknownFieldError
// naming the first such member.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	if err == nil || errors.As(err, &se) || errors.As(err, &te) {
		return err
	}
	if name, ok := unknownMember(body, reflect.TypeOf(v)); ok {
		return &unknownFieldError{name}
	}
	return err
}

// unknownMember returns the first member, in document order, of the JSON
// object body starts with that matches no field of t (a struct or a pointer
// to one), matching names as encoding/json does: case-insensitively.
func unknownMember(body []byte, t reflect.Type) (string, bool) {
	var raw json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&raw); err != nil {
		return "", false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	known := jsonFieldNames(t)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := tok.(string)
		if !containsFold(known, key) {
			return key, true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

// jsonFieldNames lists the member names encoding/json decodes into t: the
// json tag's name or the Go name of every exported field, "-" left out, and
// the fields of an untagged embedded struct promoted.
func jsonFieldNames(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			names = append(names, jsonFieldNames(ft)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	return names
}

func containsFold(names []string, s string) bool {
	for _, n := range names {
		if strings.EqualFold(n, s) {
			return true
		}
	}
	return false
}
