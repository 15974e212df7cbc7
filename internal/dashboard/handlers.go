package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/browserbroker/broker/internal/lease"
)

func (h *Handler) serveState(w http.ResponseWriter, r *http.Request) {
	p, _ := h.viewer(r)
	writeJSON(w, http.StatusOK, h.state(p.Name))
}

// serveEvents pushes the state every Interval as server-sent events, until
// the client goes, its credentials stop being valid, or Close.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	t := time.NewTicker(h.cfg.Interval)
	defer t.Stop()
	for {
		p, err := h.viewer(r)
		if err != nil {
			fmt.Fprintf(w, "event: auth\ndata: %s\n\n", strconv.Quote(err.Error()))
			rc.Flush()
			return
		}
		b, err := json.Marshal(h.state(p.Name))
		if err != nil {
			h.log.Error("encoding the dashboard state", zap.Error(err))
			return
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-h.stop:
			return
		}
	}
}

func (h *Handler) serveThumbnail(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data, err := h.thumbs.get(r.Context(), id)
	var re *lease.ReclaimedError
	switch {
	case errors.Is(err, lease.ErrNotFound) || errors.As(err, &re):
		http.Error(w, "no such lease", http.StatusNotFound)
		return
	case err != nil:
		if r.Context().Err() == nil {
			h.log.Warn("dashboard thumbnail", zap.String("lease_id", id), zap.Error(err))
		}
		http.Error(w, "no thumbnail", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
}

// revoke revokes a lease as AdminService.RevokeLease does: Manager.Reclaim
// with REVOKED.
func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p, _ := h.viewer(r)
	reason, err := h.leases.Reclaim(id, lease.Revoked, "revoked by an operator (dashboard)")
	var re *lease.ReclaimedError
	switch {
	case errors.Is(err, lease.ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such lease"})
		return
	case errors.As(err, &re):
		writeJSON(w, http.StatusConflict, map[string]string{"error": "already reclaimed", "reason": re.Reason.String()})
		return
	case err != nil:
		h.log.Error("dashboard revoke", zap.String("lease_id", id), zap.Error(err))
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "revoke failed"})
		return
	}
	h.log.Info("lease revoked by admin", zap.String("lease_id", id), zap.Stringer("reason", reason),
		zap.String("principal", p.Name), zap.String("via", "dashboard"))
	writeJSON(w, http.StatusOK, map[string]string{"reason": reason.String()})
}

// drain drains (on) or undrains the broker as AdminService.Drain and
// Undrain do.
func (h *Handler) drain(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.cfg.Drainer.SetDraining(on)
		p, _ := h.viewer(r)
		h.log.Info("drain set from the dashboard", zap.Bool("on", on), zap.String("principal", p.Name))
		writeJSON(w, http.StatusOK, map[string]bool{"draining": on})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
