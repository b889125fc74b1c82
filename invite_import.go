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
	r, err := openImportCSV(pos[0])
	if err != nil {
		return err
	}
	cols, err := readImportHeader(r, pos[0])
	if err != nil {
		return err
	}
	// Get the token first: bad credentials fail once, not on every row.
	ac, err := c.client(scopeWrite)
	if err != nil {
		return err
	}
	if err := ac.token(ctx); err != nil {
		return err
	}
	return c.importRows(ctx, ac, r, cols, &cf)
}

// openImportCSV reads the file and returns a CSV reader over it.
func openImportCSV(file string) (*csv.Reader, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))) // spreadsheets write a BOM
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	return r, nil
}

// importRows creates the invitation of each row after the header. Each row
// succeeds or fails alone, reported on its line; blank rows are skipped. The
// summary ends it (an error when a row failed).
func (c *inviteCmd) importRows(ctx context.Context, ac apiClient, r *csv.Reader, cols *importColumnsOf, cf *createFlags) error {
	t := &importTally{out: c.stdout}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		switch {
		case errors.As(err, &pe):
			t.total++
			t.fail(pe.StartLine, "not valid CSV: %v", pe.Err)
			continue
		case err != nil:
			return err
		case allBlank(rec):
			continue
		}
		line, _ := r.FieldPos(0)
		t.total++
		body, roles, problem := cols.row(rec, cf)
		if problem != "" {
			t.fail(line, "%s", problem)
			continue
		}
		c.importRow(ctx, ac, t, line, body, roles)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return t.summary()
}

// importColumnsOf maps the header's column names to their positions.
type importColumnsOf struct {
	col    map[string]int
	header int // how many columns the header names
}

// readImportHeader reads and checks the first line: known column names,
// each once, email among them.
func readImportHeader(r *csv.Reader, file string) (*importColumnsOf, error) {
	header, err := r.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%s is empty: the first line must be a header naming the columns (%s)", file, strings.Join(importColumns, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: header: %v", file, err)
	}
	col := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		switch {
		case name == "" && i == len(header)-1:
			continue // a trailing separator
		case !slices.Contains(importColumns, name):
			return nil, fmt.Errorf("%s line 1: unknown column %q; the columns are %s", file, h, strings.Join(importColumns, ", "))
		}
		if _, dup := col[name]; dup {
			return nil, fmt.Errorf("%s line 1: column %q appears twice", file, name)
		}
		col[name] = i
	}
	if _, ok := col["email"]; !ok {
		return nil, fmt.Errorf("%s line 1: no email column; the header must name the columns (%s), email is required", file, strings.Join(importColumns, ", "))
	}
	return &importColumnsOf{col: col, header: len(header)}, nil
}

// row turns one record into a create request, or says what is wrong with it.
func (cols *importColumnsOf) row(rec []string, cf *createFlags) (body client.CreateRequest, roles []string, problem string) {
	cell := func(name string) string {
		if i, ok := cols.col[name]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	if len(rec) > cols.header && !allBlank(rec[cols.header:]) {
		return body, nil, fmt.Sprintf("%d cells, but the header names %d columns", len(rec), cols.header)
	}
	email := cell("email")
	if email == "" {
		return body, nil, "email: is empty"
	}
	roles = strings.FieldsFunc(cell("roles"), func(r rune) bool { return r == ';' || r == ',' || unicode.IsSpace(r) })
	body = cf.body(email, roles)
	body.ExternalID = cell("external_id")
	var err error
	if body.Claims, err = parseJSONObjectCell(cell("claims")); err != nil {
		return body, nil, "claims: " + err.Error()
	}
	if body.Metadata, err = parseJSONObjectCell(cell("metadata")); err != nil {
		return body, nil, "metadata: " + err.Error()
	}
	return body, roles, ""
}

// importRow creates one row's invitation (idempotently, by the row's own
// content) and reports the outcome on its line.
func (c *inviteCmd) importRow(ctx context.Context, ac apiClient, t *importTally, line int, body client.CreateRequest, roles []string) {
	inv, rep, err := ac.CreateInvitation(ctx, body, rowKey(body, roles))
	var pe *client.Problem
	switch {
	case err != nil && rep == nil && errors.As(err, &pe) && pe.Slug() == "idempotency-mismatch":
		t.fail(line, "this row was already imported with other options (--role, --no-email, ...) in the last 24 hours; nothing was created")
	case err != nil && rep == nil && errors.As(err, &pe):
		t.fail(line, "%s", pe.OneLine())
	case err != nil && rep == nil:
		t.fail(line, "%v", ac.explain(err))
	case err != nil:
		t.fail(line, "%v", err) // an answer that is not an invitation
	case rep.Status == http.StatusOK && inv.URL == "":
		t.ok, t.existing = t.ok+1, t.existing+1
		fmt.Fprintf(c.stdout, "line %d: %s %s already invited (pending invitation with external_id %q; nothing new created)\n", line, inv.Email, inv.ID, inv.ExternalID)
	case rep.Replayed:
		t.ok, t.replayed = t.ok+1, t.replayed+1
		fmt.Fprintf(c.stdout, "line %d: %s %s already imported (nothing new created) %s\n", line, inv.Email, inv.ID, inv.URL)
	default:
		t.ok++
		fmt.Fprintf(c.stdout, "line %d: %s %s %s\n", line, inv.Email, inv.ID, inv.URL)
	}
}

// importTally counts the rows of an import and prints the summary.
type importTally struct {
	out                                   io.Writer
	total, ok, failed, existing, replayed int
}

func (t *importTally) fail(line int, format string, args ...any) {
	t.failed++
	fmt.Fprintf(t.out, "line %d: %s\n", line, fmt.Sprintf(format, args...))
}

func (t *importTally) summary() error {
	summary := fmt.Sprintf("imported %d of %d; %d failed", t.ok, t.total, t.failed)
	if t.existing > 0 {
		summary += fmt.Sprintf("; %d already invited", t.existing)
	}
	if t.replayed > 0 {
		summary += fmt.Sprintf("; %d already imported by an earlier run", t.replayed)
	}
	fmt.Fprintln(t.out, summary)
	if t.total == 0 {
		fmt.Fprintln(t.out, "(the file has a header but no rows)")
	}
	if t.failed > 0 {
		return fmt.Errorf("%d of %d rows failed (see the lines above); fix them and run the same command again: rows already imported are not created twice", t.failed, t.total)
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
