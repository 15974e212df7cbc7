package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/browserbroker/broker/client"
	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

func (c *cli) leases(ctx context.Context, args []string) error {
	labels := labelsFlag{}
	fs := c.flagSet("leases")
	fs.Var(labels, "label", "k=v label filter")
	inFleet := fs.Bool("fleet", false, "every broker of the fleet")
	if err := c.noArguments(fs, args); err != nil {
		return err
	}
	leases, err := adminCall(ctx, c, "leases", func(ctx context.Context, cl *client.Client) ([]*brokerv1.LeaseInfo, error) {
		if *inFleet {
			return cl.FleetLeases(ctx, labels)
		}
		return cl.Leases(ctx, labels)
	})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, &brokerv1.ListLeasesResponse{Leases: leases})
	}
	if len(leases) == 0 {
		fmt.Fprintln(c.stdout, "no leases")
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	if *inFleet {
		fmt.Fprint(tw, "BROKER\t")
	}
	fmt.Fprintln(tw, "ID\tSTATE\tAGE\tIDLE\tCOMMANDS\tLABELS")
	for _, l := range leases {
		state := enumName(l.GetState())
		if l.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED {
			state += "(" + enumName(l.GetReason()) + ")"
		}
		if *inFleet {
			fmt.Fprintf(tw, "%s\t", l.GetBrokerId())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", l.GetLeaseId(), state,
			since(now, l.GetGrantedAt()), since(now, l.GetLastActivityAt()),
			l.GetCommands(), formatLabels(l.GetLabels()))
	}
	return tw.Flush()
}

func (c *cli) leaseInfo(ctx context.Context, args []string) error {
	fs := c.flagSet("lease-info")
	rest, err := c.parse(fs, args, true)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageErrorf("lease-info: want one lease ID, got %d arguments", len(rest))
	}
	id := rest[0]
	l, err := adminCall(ctx, c, "lease-info "+id, func(ctx context.Context, cl *client.Client) (*brokerv1.LeaseInfo, error) {
		return cl.LeaseInfo(ctx, id)
	})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, &brokerv1.GetLeaseResponse{Lease: l})
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\n", l.GetLeaseId())
	fmt.Fprintf(tw, "state\t%s\n", enumName(l.GetState()))
	if l.GetReason() != brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED {
		fmt.Fprintf(tw, "reason\t%s\n", enumName(l.GetReason()))
	}
	fmt.Fprintf(tw, "labels\t%s\n", formatLabels(l.GetLabels()))
	fmt.Fprintf(tw, "granted\t%s\n", formatTime(now, l.GetGrantedAt()))
	fmt.Fprintf(tw, "last activity\t%s\n", formatTime(now, l.GetLastActivityAt()))
	fmt.Fprintf(tw, "expires\t%s\n", formatTime(now, l.GetExpiresAt()))
	fmt.Fprintf(tw, "max expires\t%s\n", formatTime(now, l.GetMaxExpiresAt()))
	fmt.Fprintf(tw, "idle ttl\t%v\n", l.GetTtl().AsDuration())
	fmt.Fprintf(tw, "commands\t%d\n", l.GetCommands())
	return tw.Flush()
}

func (c *cli) revoke(ctx context.Context, args []string) error {
	var message string
	fs := c.flagSet("revoke")
	fs.StringVar(&message, "message", "", "detail sent to the holder")
	rest, err := c.parse(fs, args, true)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageErrorf("revoke: want one lease ID, got %d arguments", len(rest))
	}
	id := rest[0]
	reason, err := adminCall(ctx, c, "revoke "+id, func(ctx context.Context, cl *client.Client) (brokerv1.ReclaimReason, error) {
		return cl.Revoke(ctx, id, message)
	})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, &brokerv1.RevokeLeaseResponse{Reason: reason})
	}
	fmt.Fprintf(c.stdout, "lease %s ended: %s\n", id, enumName(reason))
	return nil
}

func (c *cli) sessions(ctx context.Context, args []string) error {
	fs := c.flagSet("sessions")
	if err := c.noArguments(fs, args); err != nil {
		return err
	}
	sessions, err := adminCall(ctx, c, "sessions", func(ctx context.Context, cl *client.Client) ([]*brokerv1.SessionInfo, error) {
		return cl.Sessions(ctx)
	})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, &brokerv1.ListSessionsResponse{Sessions: sessions})
	}
	if len(sessions) == 0 {
		fmt.Fprintln(c.stdout, "no sessions")
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATE\tGENERATION\tLEASE\tWAITING\tSAVED")
	for _, s := range sessions {
		lease := s.GetLeaseId()
		if lease == "" {
			lease = "-"
		}
		saved := "-"
		if s.GetSavedAt() != nil {
			saved = since(now, s.GetSavedAt()) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", s.GetSessionKey(), enumName(s.GetState()),
			s.GetGeneration(), lease, s.GetWaiting(), saved)
	}
	return tw.Flush()
}

func (c *cli) deleteSession(ctx context.Context, args []string) error {
	fs := c.flagSet("delete-session")
	rest, err := c.parse(fs, args, true)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageErrorf("delete-session: want one session key, got %d arguments", len(rest))
	}
	key := rest[0]
	reason, err := adminCall(ctx, c, "delete-session "+key, func(ctx context.Context, cl *client.Client) (brokerv1.ReclaimReason, error) {
		return cl.DeleteSession(ctx, key)
	})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, &brokerv1.DeleteSessionResponse{LeaseReason: reason})
	}
	if reason == brokerv1.ReclaimReason_RECLAIM_REASON_UNSPECIFIED {
		fmt.Fprintf(c.stdout, "session %s deleted\n", key)
	} else {
		fmt.Fprintf(c.stdout, "session %s deleted; its lease ended: %s\n", key, enumName(reason))
	}
	return nil
}

func (c *cli) stats(ctx context.Context, args []string) error {
	fs := c.flagSet("stats")
	inFleet := fs.Bool("fleet", false, "summed over every broker of the fleet")
	if err := c.noArguments(fs, args); err != nil {
		return err
	}
	st, err := adminCall(ctx, c, "stats", func(ctx context.Context, cl *client.Client) (*brokerv1.GetStatsResponse, error) {
		if *inFleet {
			return cl.FleetStats(ctx)
		}
		return cl.Stats(ctx)
	})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, st)
	}
	invariant := "ok"
	if !st.GetInvariantOk() {
		invariant = "BROKEN"
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "capacity\t%d\n", st.GetCapacity())
	fmt.Fprintf(tw, "active\t%d\n", st.GetActive())
	fmt.Fprintf(tw, "waiting\t%d\n", st.GetWaiting())
	fmt.Fprintf(tw, "opening\t%d\n", st.GetOpening())
	fmt.Fprintf(tw, "granted total\t%d\n", st.GetGrantedTotal())
	fmt.Fprintf(tw, "reclaimed total\t%d\n", st.GetReclaimedTotal())
	for _, rc := range st.GetReclaimed() {
		fmt.Fprintf(tw, "reclaimed %s\t%d\n", enumName(rc.GetReason()), rc.GetCount())
	}
	fmt.Fprintf(tw, "duplicate triggers\t%d\n", st.GetDuplicateTriggers())
	fmt.Fprintf(tw, "acquire failures\t%d\n", st.GetAcquireFailures())
	fmt.Fprintf(tw, "browser contexts\t%d\n", st.GetBrowserContexts())
	fmt.Fprintf(tw, "browsers\t%d\n", st.GetBrowsers())
	fmt.Fprintf(tw, "invariant\t%s\n", invariant)
	fmt.Fprintf(tw, "invariant violations\t%d\n", st.GetInvariantViolations())
	fmt.Fprintf(tw, "uptime\t%v\n", st.GetUptime().AsDuration().Truncate(time.Second))
	if err := tw.Flush(); err != nil || len(st.GetMembers()) == 0 {
		return err
	}
	fmt.Fprintln(c.stdout)
	tw = tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BROKER\tADDRESS\tCAPACITY\tACTIVE\tFREE\tWAITING\tDRAINING\tHEARTBEAT")
	for _, m := range st.GetMembers() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%v\t%s ago\n", m.GetBrokerId(), m.GetAddress(), m.GetCapacity(),
			m.GetActive(), m.GetFree(), m.GetWaiting(), m.GetDraining(), since(time.Now(), m.GetHeartbeatAt()))
	}
	return tw.Flush()
}
