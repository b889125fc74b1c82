package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
)

// scopeStoreBackup is the scope of GET /api/store/backup. No client holds it
// unless an operator lists it in that client's scopes: a backup holds every
// user, grant and (encrypted or not) signing key.
const scopeStoreBackup = client.ScopeStoreBackup

// backupWriteStall bounds how long one write of a backup may wait for the
// caller to read: the store's read transaction stays open while the snapshot
// streams, so a caller that stops reading must not hold it for ever.
const backupWriteStall = time.Minute

// apiStoreBackup answers GET /api/store/backup: a consistent snapshot of the
// bbolt file, streamed as it is read (never held in memory), then one audit
// record (store.backup, with the byte count). An error before the first byte
// is a problem document; after it the connection is cut, so the caller sees
// a broken answer rather than a short file that looks whole.
func (h *API) apiStoreBackup(w http.ResponseWriter, r *http.Request, c Caller) {
	ctx := r.Context()
	if h.Backup == nil {
		writeProblem(w, http.StatusNotImplemented, "backup-not-supported", "Backups are not served on this store",
			"usher serves online backups of its bbolt file only; this usher runs on Redis. Back Redis up with its own "+
				"persistence (RDB snapshots, AOF, a replica), or copy the state into a bbolt file with "+
				"'usher store migrate --from redis://… --to bolt:FILE'.")
		return
	}
	at := h.Now().UTC()
	name := "usher-" + at.Format("20060102T150405Z") + ".db"
	bw := &backupWriter{w: w, rc: http.NewResponseController(w), name: name}
	n, err := h.Backup(bw)
	if err != nil {
		if !bw.started {
			h.storeProblem(w, r, "reading the store for a backup", err)
			return
		}
		h.Metrics.storeError("writing a backup")
		h.Logger.ErrorContext(ctx, "store backup cut off", "client_id", c.ClientID, "bytes", bw.n, "err", err)
		panic(http.ErrAbortHandler) // cut the connection: the caller must not take a short file for a backup
	}
	bw.start() // an empty snapshot still answers 200 with its headers
	_ = bw.rc.SetWriteDeadline(time.Time{})
	h.Logger.InfoContext(ctx, "store backup served", "client_id", c.ClientID, "bytes", n, "file", name)
	rec := &grants.AuditRecord{ID: randomToken(12), At: h.Now(), Action: "store.backup", Actor: c.actor(), Target: name,
		Detail: map[string]string{"bytes": strconv.FormatInt(n, 10)}}
	// Recorded even when the caller hangs up after the last byte: it has the backup.
	if err := h.Store.AppendAudit(context.WithoutCancel(ctx), rec); err != nil {
		// The backup was served; only its record is missing.
		h.Metrics.storeError("writing the audit log")
		h.Logger.ErrorContext(ctx, "writing the audit log", "action", rec.Action, "err", err)
	}
}

// backupWriter sends the answer's headers with the first byte, and gives
// each write backupWriteStall to reach the caller.
type backupWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	name    string
	started bool
	n       int64
}

func (b *backupWriter) start() {
	if b.started {
		return
	}
	b.started = true
	hd := b.w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Disposition", `attachment; filename="`+b.name+`"`)
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	b.w.WriteHeader(http.StatusOK)
}

func (b *backupWriter) Write(p []byte) (int, error) {
	b.start()
	_ = b.rc.SetWriteDeadline(time.Now().Add(backupWriteStall)) // not supported by every ResponseWriter (tests)
	n, err := b.w.Write(p)
	b.n += int64(n)
	return n, err
}
