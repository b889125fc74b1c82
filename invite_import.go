package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"unicode"

	"github.com/usher-oidc/usher/client"
)

var importColumns = []string{"email", "roles", "claims", "external_id", "metadata"}

func (c *inviteCmd) importCSV(ctx context.Context, args []string) error {
	fs := c.flags()
	var cf createFlags
	cf.register(fs)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return c.usagef("import takes one CSV file: usher invite import people.csv")
	}
	if err := c.checkCreateFlags(&cf); err != nil {
		return err
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))) // spreadsheets write a BOM
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err == io.EOF {
		return fmt.Errorf("%s is empty: the first line must be a header naming the columns (%s)", pos[0], strings.Join(importColumns, ", "))
	}
	if err != nil {
		return fmt.Errorf("%s: header: %v", pos[0], err)
	}
	col := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		switch {
		case name == "" && i == len(header)-1:
			continue // a trailing separator
		case !slices.Contains(importColumns, name):
			return fmt.Errorf("%s line 1: unknown column %q; the columns are %s", pos[0], h, strings.Join(importColumns, ", "))
		}
		if _, dup := col[name]; dup {
			return fmt.Errorf("%s line 1: column %q appears twice", pos[0], name)
		}
		col[name] = i
	}
	if _, ok := col["email"]; !ok {
		return fmt.Errorf("%s line 1: no email column; the header must name the columns (%s), email is required", pos[0], strings.Join(importColumns, ", "))
	}

	// Get the token first: bad credentials fail once, not on every row.
	ac, err := c.client(scopeWrite)
	if err != nil {
		return err
	}
	if err := ac.token(ctx); err != nil {
		return err
	}

	var total, ok, failed, existing, replayed int
	fail := func(line int, format string, args ...any) {
		failed++
		fmt.Fprintf(c.stdout, "line %d: %s\n", line, fmt.Sprintf(format, args...))
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return err
			}
			total++
			fail(pe.StartLine, "not valid CSV: %v", pe.Err)
			continue
		}
		if allBlank(rec) {
			continue
		}
		line, _ := r.FieldPos(0)
		total++
		cell := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		if len(rec) > len(header) && !allBlank(rec[len(header):]) {
			fail(line, "%d cells, but the header names %d columns", len(rec), len(header))
			continue
		}
		email := cell("email")
		if email == "" {
			fail(line, "email: is empty")
			continue
		}
		roles := strings.FieldsFunc(cell("roles"), func(r rune) bool { return r == ';' || r == ',' || unicode.IsSpace(r) })
		body := cf.body(email, roles)
		body.ExternalID = cell("external_id")
		if body.Claims, err = parseJSONObjectCell(cell("claims")); err != nil {
			fail(line, "claims: %v", err)
			continue
		}
		if body.Metadata, err = parseJSONObjectCell(cell("metadata")); err != nil {
			fail(line, "metadata: %v", err)
			continue
		}
		inv, rep, err := ac.CreateInvitation(ctx, body, rowKey(body, roles))
		if err != nil && rep == nil {
			var pe *client.Problem
			switch {
			case errors.As(err, &pe) && pe.Slug() == "idempotency-mismatch":
				fail(line, "this row was already imported with other options (--role, --no-email, ...) in the last 24 hours; nothing was created")
			case errors.As(err, &pe):
				fail(line, "%s", pe.OneLine())
			default:
				fail(line, "%v", ac.explain(err))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if err != nil {
			fail(line, "%v", err) // an answer that is not an invitation
			continue
		}
		ok++
		switch {
		case rep.Status == http.StatusOK && inv.URL == "":
			existing++
			fmt.Fprintf(c.stdout, "line %d: %s %s already invited (pending invitation with external_id %q; nothing new created)\n", line, inv.Email, inv.ID, inv.ExternalID)
		case rep.Replayed:
			replayed++
			fmt.Fprintf(c.stdout, "line %d: %s %s already imported (nothing new created) %s\n", line, inv.Email, inv.ID, inv.URL)
		default:
			fmt.Fprintf(c.stdout, "line %d: %s %s %s\n", line, inv.Email, inv.ID, inv.URL)
		}
	}
	summary := fmt.Sprintf("imported %d of %d; %d failed", ok, total, failed)
	if existing > 0 {
		summary += fmt.Sprintf("; %d already invited", existing)
	}
	if replayed > 0 {
		summary += fmt.Sprintf("; %d already imported by an earlier run", replayed)
	}
	fmt.Fprintln(c.stdout, summary)
	if total == 0 {
		fmt.Fprintln(c.stdout, "(the file has a header but no rows)")
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d rows failed (see the lines above); fix them and run the same command again: rows already imported are not created twice", failed, total)
	}
	return nil
}

// rowKey is a row's Idempotency-Key. It depends on the row's own content,
// never on its line or on the rest of the file: after fixing a failed row,
// the same command again replays the rows imported before and creates only
// the fixed ones. (Not the external_id alone: a changed row with a pending
// external_id must reach the API, which answers "already invited".)
func rowKey(b client.CreateRequest, rowRoles []string) string {
	// json.Marshal sorts map keys: the same claims give the same key.
	content, _ := json.Marshal(struct {
		Email      string         `json:"email"`
		Roles      []string       `json:"roles"`
		Claims     map[string]any `json:"claims"`
		ExternalID string         `json:"external_id"`
		Metadata   map[string]any `json:"metadata"`
	}{b.Email, rowRoles, b.Claims, b.ExternalID, b.Metadata})
	sum := sha256.Sum256(content)
	return "usher-import-" + hex.EncodeToString(sum[:])
}

func parseJSONObjectCell(s string) (map[string]any, error) {
	if s == "" {
		return nil, nil
	}
	return parseJSONObject(s)
}

func allBlank(cells []string) bool {
	for _, s := range cells {
		if strings.TrimSpace(s) != "" {
			return false
		}
	}
	return true
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(v string) error { *l = append(*l, strings.TrimSpace(v)); return nil }
