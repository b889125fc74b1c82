package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
)

// listFlags are the filters and paging of `usher invite list`.
type listFlags struct {
	status, email, externalID, emailPrefix, extPrefix, since, until string
	unsafe, all                                                     bool
	limit                                                           int
}

func (f *listFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.status, "status", "", "only invitations in this status: pending, redeemed, revoked, declined, expired")
	fs.StringVar(&f.email, "email", "", "only invitations for this email address")
	fs.StringVar(&f.externalID, "external-id", "", "only invitations with this external_id")
	fs.StringVar(&f.emailPrefix, "email-prefix", "", "only invitations whose email starts with this (any case; listed by email)")
	fs.StringVar(&f.extPrefix, "external-id-prefix", "", "only invitations whose external_id starts with this (listed by external_id)")
	fs.StringVar(&f.since, "since", "", "only invitations created on or after this date (YYYY-MM-DD, UTC) or RFC 3339 time")
	fs.StringVar(&f.until, "until", "", "only invitations created before this date (YYYY-MM-DD: up to the end of that day, UTC) or RFC 3339 time")
	fs.BoolVar(&f.unsafe, "unsafe-claims", false, "only invitations holding claim names that fold onto registered claims (never served)")
	fs.IntVar(&f.limit, "limit", 50, "page size, 1 to 1000")
	fs.BoolVar(&f.all, "all", false, "fetch every page")
}

func (c *inviteCmd) list(ctx context.Context, args []string) error {
	fs := c.flags()
	var f listFlags
	f.register(fs)
	fs.BoolVar(&c.jsonOut, "json", false, "print the API's JSON")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usagef("unexpected argument %q", pos[0])
	}
	q, err := c.listQuery(&f)
	if err != nil {
		return err
	}
	ac, err := c.client(scopeRead)
	if err != nil {
		return err
	}
	if c.jsonOut {
		return c.listJSON(ctx, ac, q, f.all)
	}
	invs, next, err := listInvitations(ctx, ac, q, f.all)
	if err != nil {
		return err
	}
	c.printInvitationTable(invs, f.unsafe, next != "")
	return nil
}

// listQuery checks the list flags and turns them into the API's query.
func (c *inviteCmd) listQuery(f *listFlags) (client.ListQuery, error) {
	switch f.status {
	case "", "pending", "redeemed", "revoked", "declined", "expired":
	default:
		return client.ListQuery{}, c.usagef("--status must be pending, redeemed, revoked, declined or expired, not %q", f.status)
	}
	if f.limit < 1 || f.limit > 1000 {
		return client.ListQuery{}, c.usagef("--limit must be from 1 to 1000")
	}
	q := client.ListQuery{Status: grants.Status(f.status), Email: f.email, ExternalID: f.externalID, UnsafeClaims: f.unsafe, Limit: f.limit,
		EmailPrefix: f.emailPrefix, ExternalIDPrefix: f.extPrefix}
	var err error
	if q.CreatedSince, err = listDate("--since", f.since, false); err != nil {
		return client.ListQuery{}, c.usagef("%v", err)
	}
	if q.CreatedUntil, err = listDate("--until", f.until, true); err != nil {
		return client.ListQuery{}, c.usagef("%v", err)
	}
	return q, nil
}

// listJSON prints the list under --json, the invitations as usher sent
// them: one page as it came (an error answer too), or with all every
// page's invitations in one object.
func (c *inviteCmd) listJSON(ctx context.Context, ac apiClient, q client.ListQuery, all bool) error {
	if !all {
		_, rep, err := ac.ListInvitations(ctx, q)
		if rep != nil {
			return c.printJSON(rep.Body)
		}
		return ac.explain(err)
	}
	// Every page was fetched, so there is no cursor to print.
	out := struct {
		Invitations []json.RawMessage `json:"invitations"`
	}{Invitations: []json.RawMessage{}}
	_, err := eachPage(ctx, ac, q, true, func(_ *client.InvitationList, body []byte) error {
		var raw struct {
			Invitations []json.RawMessage `json:"invitations"`
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			return fmt.Errorf("unreadable answer from usher: %v", err)
		}
		out.Invitations = append(out.Invitations, raw.Invitations...)
		return nil
	})
	if err != nil {
		return err
	}
	b, _ := json.Marshal(out)
	return c.printJSON(b)
}

// listInvitations fetches one page, or every page with all, and returns the
// cursor of the page after the last one fetched ("" when there is none).
func listInvitations(ctx context.Context, ac apiClient, q client.ListQuery, all bool) ([]client.Invitation, string, error) {
	var invs []client.Invitation
	next, err := eachPage(ctx, ac, q, all, func(list *client.InvitationList, _ []byte) error {
		invs = append(invs, list.Invitations...)
		return nil
	})
	return invs, next, err
}

// eachPage fetches the page q names, and with all the pages after it,
// handing each to page (the list, and its body as usher sent it); it
// returns the cursor after the last page fetched ("" when there is none).
func eachPage(ctx context.Context, ac apiClient, q client.ListQuery, all bool, page func(*client.InvitationList, []byte) error) (string, error) {
	for {
		list, rep, err := ac.ListInvitations(ctx, q)
		if err != nil {
			return "", ac.explain(err)
		}
		if err := page(list, rep.Body); err != nil {
			return "", err
		}
		if !all || list.NextCursor == "" {
			return list.NextCursor, nil
		}
		q.Cursor = list.NextCursor
	}
}

// printInvitationTable prints the list for people: one row per invitation,
// with its unsafe claims under it when --unsafe-claims asked for them.
func (c *inviteCmd) printInvitationTable(invs []client.Invitation, unsafe, more bool) {
	if len(invs) == 0 {
		fmt.Fprintln(c.stdout, "no invitations")
		return
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tEMAIL\tROLES\tEXTERNAL_ID\tEXPIRES_AT\tEMAIL_STATUS")
	for _, inv := range invs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", inv.ID, inv.Status, inv.Email, dash(strings.Join(inv.Roles, " ")),
			dash(inv.ExternalID), inv.ExpiresAt.Format(time.RFC3339), dash(inv.EmailStatus))
		if unsafe {
			fmt.Fprintf(tw, "\tunsafe claims (kept, never served): %s\n", strings.Join(inv.UnsafeClaims, " "))
		}
	}
	tw.Flush()
	if more {
		fmt.Fprintf(c.stdout, "(more invitations: use --all, or a larger --limit)\n")
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// listDate reads --since/--until: a UTC day (--until: up to that day's end)
// or an RFC 3339 time; "" is no bound.
func listDate(flag, v string, endOfDay bool) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.Parse(time.DateOnly, v); err == nil {
		if endOfDay {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s must be a date (YYYY-MM-DD) or an RFC 3339 time, not %q", flag, v)
	}
	return t, nil
}
