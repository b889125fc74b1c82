package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads the YAML file at path ("" = no file: defaults only), applies
// USHER_* overrides from env (normally os.LookupEnv; nil = none) and
// validates.
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	return load(path, env, false)
}

// LoadDev is Load with Dev set before validation (for `usher dev`).
func LoadDev(path string, env func(string) (string, bool)) (*Config, error) {
	return load(path, env, true)
}

func load(path string, env func(string) (string, bool), dev bool) (*Config, error) {
	var data []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		data = b
	}
	c, err := decode(data, env, path)
	return finish(c, err, dev)
}

// Parse is Load from YAML bytes.
func Parse(data []byte, env func(string) (string, bool)) (*Config, error) {
	return parse(data, env, false)
}

// ParseDev is Parse with Dev set before validation.
func ParseDev(data []byte, env func(string) (string, bool)) (*Config, error) {
	return parse(data, env, true)
}

func parse(data []byte, env func(string) (string, bool), dev bool) (*Config, error) {
	c, err := decode(data, env, "")
	return finish(c, err, dev)
}

// finish validates what decode made of the file. Decode problems (unknown
// keys, values of the wrong type) do not stop validation: the operator gets
// every problem in one run. Validation problems under a path that already
// failed to decode are left out (they would only repeat it).
func finish(c *Config, decodeErr error, dev bool) (*Config, error) {
	if c == nil {
		return nil, decodeErr
	}
	c.Dev = dev
	verr := c.Validate()
	if decodeErr == nil {
		if verr != nil {
			return nil, verr
		}
		return c, nil
	}
	errs := []error{decodeErr}
	for _, e := range unjoin(verr) {
		if !underFailedPath(decodeErr, e) {
			errs = append(errs, e)
		}
	}
	return nil, errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// underFailedPath reports whether e names a path at or under one of the
// paths in decodeErr.
func underFailedPath(decodeErr, e error) bool {
	var fe *FieldError
	if !errors.As(e, &fe) {
		return false
	}
	for _, d := range unjoin(decodeErr) {
		var df *FieldError
		if errors.As(d, &df) && (fe.Path == df.Path || strings.HasPrefix(fe.Path, df.Path+".") || strings.HasPrefix(fe.Path, df.Path+"[")) {
			return true
		}
	}
	return false
}

// decode decodes YAML over the defaults and applies the environment.
// source (the file name, or "") prefixes YAML syntax errors. A config with
// an error is the part that decoded (the error lists what did not); a nil
// config means nothing could be read.
func decode(data []byte, env func(string) (string, bool), source string) (*Config, error) {
	c := Default()
	var errs []error
	if len(bytes.TrimSpace(data)) > 0 {
		fieldErrs, err := decodeYAML(data, c)
		if err != nil {
			if source != "" {
				err = fmt.Errorf("%s: %w", source, err)
			}
			return nil, err
		}
		errs = append(errs, fieldErrs...)
	}
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	if err := applyEnv(c, env); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// decodeYAML decodes data into c. fieldErrs are the keys and values left
// out (each a *FieldError); err is a document usher cannot read at all.
func decodeYAML(data []byte, c *Config) (fieldErrs []error, err error) {
	// First pass: the node tree, to report unknown keys and type errors by
	// their full YAML path, and prune them.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("yaml: line %d: only one YAML document is allowed", extra.Line)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		doc = doc.Content[0]
	}
	if !checkNode(doc, configType, "", 0, &fieldErrs) || doc.ShortTag() == "!!null" {
		return fieldErrs, nil
	}
	// Second pass: the real decode of what is left, over the defaults.
	if err := doc.Decode(c); err != nil {
		return fieldErrs, err
	}
	return fieldErrs, nil
}
