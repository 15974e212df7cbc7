#!/usr/bin/python3
"""Lease a browser from the broker, load a page, print the texts of some
elements, save a screenshot, and give the browser back.

    ./gen.sh
    /usr/bin/python3 lease.py --addr localhost:7070 --url https://example.com --text h1 --screenshot out.png

Exit status: 0 when all went well and our release ended the lease; 2 for a
usage error; 3 when the lease ended for another reason (revoked by an
operator, expired, the broker shutting down...); 10 + the gRPC code when a
call failed (18: RESOURCE_EXHAUSTED, no capacity in time; 24: UNAVAILABLE);
1 otherwise. Ctrl-C ends the stream, and the broker reclaims the lease.
"""

import argparse
import json
import sys

import grpc

import broker
from broker import pb


def parse_args(argv):
    p = argparse.ArgumentParser(description="Lease a browser from the broker and drive its page.")
    p.add_argument("--addr", default="localhost:7070", help="broker address (default %(default)s)")
    p.add_argument("--url", required=True, help="page to load (http or https)")
    p.add_argument("--text", action="append", default=[], metavar="SELECTOR",
                   help="print the inner texts of the matching elements (repeatable)")
    p.add_argument("--screenshot", metavar="FILE", help="save a PNG screenshot of the page")
    p.add_argument("--ttl", default="30s", type=broker.parse_duration,
                   help="idle TTL of the lease, renewed at a third of it (default 30s)")
    p.add_argument("--wait", default="0", type=broker.parse_duration,
                   help="longest wait in the broker's queue (default: the broker's)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="label shown to operators (repeatable; default example=python)")
    p.add_argument("--hold", default="0", type=broker.parse_duration,
                   help="hold the lease this long after loading the page")
    args = p.parse_args(argv)
    args.labels = {}
    for kv in args.label or ["example=python"]:
        key, sep, value = kv.partition("=")
        if not key or not sep:
            p.error(f"--label {kv}: want KEY=VALUE")
        args.labels[key] = value
    return args


def main(argv):
    args = parse_args(argv)
    clients = broker.Clients(args.addr)
    try:
        return lease_and_work(clients, args)
    except grpc.RpcError as e:
        # A failed acquire, or a failure while the lease was held.
        print(f"lease.py: {e.code().name}: {e.details()}", file=sys.stderr)
        return 10 + e.code().value[0]
    except OSError as e:
        print(f"lease.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lease.py: interrupted", file=sys.stderr)
        return 130
    finally:
        clients.close()


def lease_and_work(clients, args):
    lease = broker.acquire(
        clients.lease,
        ttl=args.ttl,
        wait=args.wait,
        labels=args.labels,
        on_queued=lambda position: print(f"queued: position {position}", flush=True),
    )
    print(f"granted: lease {lease.id}, idle TTL {lease.ttl:g}s", flush=True)

    failure = None
    try:
        work(clients.page, lease, args)
    except KeyboardInterrupt:
        lease.cancel()  # the stream ends; the broker reclaims the lease
        raise
    except broker.LeaseEnded:
        pass  # reported by the reason below
    except grpc.RpcError as e:
        # ABORTED / FAILED_PRECONDITION: the lease was reclaimed under the
        # step, and the reason below says why. Anything else is ours.
        if e.code() not in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION):
            failure = e
    except OSError as e:
        failure = e

    # Give the lease back, also after a failed step. When the lease has
    # already ended, release() only tells why.
    reason = lease.release()
    ended = "stream failed" if reason is None else broker.reason_name(reason)
    detail = f" ({lease.message})" if lease.message else ""
    print(f"lease {lease.id} ended: {ended}{detail}", flush=True)
    if reason is None:
        raise lease.error or RuntimeError(lease.message)
    if failure:
        raise failure
    return 0 if reason == pb.RECLAIM_REASON_RELEASED else 3


def work(page, lease, args):
    """Drives the page. Every step raises LeaseEnded at once when the lease
    ends under it (an operator's revoke, the TTL, a crash)."""
    nav = lease.call(page.Navigate, pb.NavigateRequest(lease_id=lease.id, url=args.url))
    print(f"navigated: {nav.status} {nav.url} title {json.dumps(nav.title)}", flush=True)

    if args.hold > 0:
        print(f"holding: {args.hold:g}s", flush=True)
        lease.hold(args.hold)

    for selector in args.text:
        resp = lease.call(page.Text, pb.TextRequest(lease_id=lease.id, selector=selector))
        for text in resp.texts:
            print(f"text {selector}: {text}", flush=True)

    if args.screenshot:
        shot = lease.call(page.Screenshot, pb.ScreenshotRequest(lease_id=lease.id))
        with open(args.screenshot, "wb") as f:
            f.write(shot.data)
        print(f"screenshot: {args.screenshot} ({len(shot.data)} bytes)", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
